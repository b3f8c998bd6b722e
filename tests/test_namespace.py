"""The packages are microprop.host, microprop.device and microprop.firmware_tools; nothing on
the host imports them under their folder names.

Runs on: host (pytest). The device package's own modules import each other relatively, so that
the same files are /lib/device on a board and microprop.device here.
"""

import ast
import importlib
import subprocess
import sys

import pytest

from .conftest import NoBareImports
from .helpers import ROOT

HOST_SIDE = ("host", "firmware_tools", "tests", "bench", "microprop")


def bare_imports(path):
    """[(line, module)] of the absolute imports of host/device/firmware_tools in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in NoBareImports.NAMES]
    return found


def test_host_code_imports_the_microprop_packages():
    found = []
    for folder in HOST_SIDE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "board_scripts" in path.parts or "node_modules" in path.parts:
                continue  # board scripts run on the board, where the package is `device`
            for line, name in bare_imports(path):
                found.append("%s:%d: %s" % (path.relative_to(ROOT), line, name))
    assert not found, "import microprop.<package> instead:\n" + "\n".join(found)


def test_device_imports_itself_relatively():
    for path in sorted((ROOT / "device").glob("*.py")):
        if path.name == "main.py":
            continue  # the board's entry point, outside the package: `from device.board ...`
        assert bare_imports(path) == [], path.name


def test_a_bare_import_is_refused_in_the_tests():
    with pytest.raises(ImportError, match="import microprop.device, not device"):
        importlib.import_module("device")


def test_importing_everything_loads_no_bare_package():
    script = (
        "import pkgutil, sys, microprop\n"
        "for m in pkgutil.walk_packages(microprop.__path__, 'microprop.'):\n"
        "    if m.name != 'microprop.__main__':\n"
        "        __import__(m.name)\n"
        "bare = sorted(n for n in sys.modules if n.split('.')[0] in %r)\n"
        "print(len(sys.modules), bare)\n" % (NoBareImports.NAMES,)
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd="/", timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(" ", 1)[1].strip() == "[]", proc.stdout
