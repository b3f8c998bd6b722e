"""The board app starts in every heap from the smallest that starts it to 8 kB above it, on the
emulated Cortex-M0 (32-bit objects, the `.mpy` files deploy puts there), in every learning
mode: the start keeps the heap in one piece (device/board.py, Memory), so the heap an app
needs is one number, not a lottery of layouts.

Runs on: host (pytest, Linux), qemu and the firmware of ../shared/firmware/qemu. Marker
`emulated`. The trials are bench/board.py's (`measure_heap`: a bytearray blocker leaves H free
bytes, the app starts as main.py does, predicts, takes a label, predicts again); the bench
tries every 512 bytes of the 8 kB, this test every 2 kB (about 60 trials, 30 s).
"""

import importlib.util
import sys

import pytest

from microprop.device.config import LEARN
from microprop.firmware_tools.emulated import FIRMWARE_HEAP, EmulatedBoard

from .conftest import ROOT, require_emulated

pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ptys: Linux"),
]


def bench_board():
    """bench/board.py as a module: its files, deploy and heap trials."""
    spec = importlib.util.spec_from_file_location("bench_board", ROOT / "bench" / "board.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_heap_from_the_smallest_to_8k_above_starts_the_app(tmp_path, monkeypatch):
    require_emulated("cortex-m0")
    bench = bench_board()
    monkeypatch.setattr(bench, "HEAP_RANGE_STEP", 2048)
    model, data, flash = bench.quiet(bench.make_files, tmp_path, True)
    with EmulatedBoard("cortex-m0", flash_dir=flash) as b:
        bench.deploy(b.port, model, data, tmp_path / "build")
        board = bench.Board(b.port, tmp_path / "scripts")
        board.folder.mkdir()
        r = bench.measure_heap(board)
    assert r["app_fails"] == {}
    for learn in LEARN:
        assert r["app_heap_range_fails"][learn] == [], (learn, r["app_heap"][learn])
        # the heap a learning app needs is well short of the whole heap, and more than it holds
        assert r["app_held"][learn] < r["app_heap"][learn] <= FIRMWARE_HEAP - 24 * 1024, r
