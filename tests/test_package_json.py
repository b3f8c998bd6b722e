"""device/package.json, the `mpremote mip install` manifest, matches the device files.

Runs on: host (pytest); the install test uses the virtual board and the real mpremote CLI.
"""

import json
import re
import subprocess
import sys

import pytest

from firmware_tools import deploy
from firmware_tools.virtualboard import VirtualBoard

from .conftest import ROOT

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
