"""device/package.json, the `mpremote mip install` manifest, matches the device files, and the
board imports every one of them.

Runs on: host (pytest); the install test uses the virtual board and the real mpremote CLI, the
import test the `micropython` binary.
"""

import json
import re
import shutil
import subprocess
import sys

import pytest

from microprop.device.config import LEARN
from microprop.device.sensors import KINDS
from microprop.firmware_tools import deploy
from microprop.firmware_tools.virtualboard import VirtualBoard

from .conftest import ROOT
from .helpers import run_board

MANIFEST = ROOT / "device" / "package.json"
REGENERATE = (
    "device/package.json is out of date; regenerate it with: python -c "
    '"from firmware_tools.deploy import write_package_json; write_package_json()"'
)


def test_manifest_lists_every_device_module():
    manifest = json.loads(MANIFEST.read_text())
    assert set(manifest) == {"urls", "version"}
    listed = {source for _, source in manifest["urls"]}
    expected = {p.name for p in (ROOT / "device").glob("*.py") if not deploy.is_test_only(p.name)}
    assert listed == expected, REGENERATE
    assert manifest == deploy.package_json(), REGENERATE


def test_manifest_entries_are_mip_shaped():
    manifest = json.loads(MANIFEST.read_text())
    for entry in manifest["urls"]:
        assert isinstance(entry, list) and len(entry) == 2, entry
        target, source = entry
        assert target == "device/" + source  # lands in <mip target>/device/
        assert "/" not in source and (ROOT / "device" / source).is_file()  # relative URL
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert manifest["version"] == version.group(1)


def test_test_only_files_stay_off_the_board():
    assert deploy.is_test_only("test_infer.py") and deploy.is_test_only("infer_test.py")
    assert not deploy.is_test_only("infer.py") and not deploy.is_test_only("protest.py")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the virtual board needs /proc")
def test_mip_installs_the_package_from_the_local_path(tmp_path):
    manifest = json.loads(MANIFEST.read_text())
    sources = {name: (ROOT / "device" / name).read_bytes() for _, name in manifest["urls"]}
    flash = tmp_path / "flash"
    with VirtualBoard(flash) as board:
        proc = subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", board.port]
            + ["mip", "install", str(MANIFEST)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Done" in proc.stdout
        proc = subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", board.port, "exec"]
            + ["import device.infer as i; print(i.__file__, i.kernel_viper is not None)"],
            capture_output=True,
            text=True,
            timeout=15,
        )
        assert proc.stdout == "/lib/device/infer.py True\n", proc.stdout + proc.stderr
    installed = {p.name: p.read_bytes() for p in (flash / "lib" / "device").iterdir()}
    assert installed == sources


# main.py's start (device.board.main) with a sample limit, recording every device module that
# is imported on the way: the start unloads some of them again (device/board.py, Memory).
BOARD_IMPORTS = """
import builtins, sys
seen = set()
_import = builtins.__import__

def _hook(*args):
    m = _import(*args)
    for k in sys.modules:
        if k == "device" or k.startswith("device."):
            seen.add(k)
    return m

builtins.__import__ = _hook
from device.board import main
main("board.json", max_samples=%d)
print("imported", " ".join(sorted(seen)))
"""


def board_imports(micropython, folder, config, samples):
    """The app's output lines and the device modules it imported, for board.json `config`."""
    (folder / "board.json").write_text(json.dumps(config))
    lines = run_board(micropython, folder, BOARD_IMPORTS % samples, stdin=b"")
    assert lines[-1].startswith("imported device"), lines[-20:]
    return lines[:-1], set(lines[-1].split()[1:])


def test_the_board_imports_every_module_of_its_package(board, micropython, tmp_path):
    """What "the board imports": main.py's start with the replay sensor in every learning mode
    (model, app, trainer, checkpoints, rehearsal; smoothing, whose module only then loads), with
    a turned mount (device/mount.py, which only then loads), and
    with each hardware sensor kind (its driver is imported before the Unix port's missing
    `machine` stops the start)."""
    folder = tmp_path / "board"
    shutil.copytree(board[0], folder)
    imported = {}
    for learn in LEARN:
        config = {"sensor": "replay", "realtime": False, "learn": learn, "smoothing": 3}
        lines, imported["replay, learn " + learn] = board_imports(micropython, folder, config, 200)
        assert any(line.startswith("pred ") for line in lines), lines[-20:]
        assert not any("learn=off" in line for line in lines), lines[:20]
    config = {"sensor": "replay", "realtime": False, "learn": "off", "mount": "-y+x+z"}
    lines, imported["replay, mount"] = board_imports(micropython, folder, config, 200)
    assert any(line.startswith("pred ") for line in lines), lines[-20:]
    hardware = [kind for kind in KINDS if kind != "replay"]
    assert hardware
    for kind in hardware:
        config = {"sensor": kind, "learn": "off", "pins": [26]}
        lines, imported[kind] = board_imports(micropython, folder, config, 1)
        assert any(line.startswith("err sensor ") for line in lines), lines[-20:]
    package = {"device"} | {"device." + p.stem for p in deploy.package_files()}
    package.discard("device.__init__")
    union = set().union(*imported.values())
    assert package - union == set(), "in the package, never imported by the board"
    assert union - package == set(), "imported by the board, not in the package"
    assert (ROOT / "device" / "main.py").read_text().count("from device.board import main") == 1
