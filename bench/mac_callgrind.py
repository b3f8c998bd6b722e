"""Instructions per multiply-accumulate on x64, counted by callgrind: the viper kernel against
scalar C.

Runs on: host. Needs valgrind (`valgrind --tool=callgrind`, Debian's), the `micropython` Unix
port, `mpy-cross` and `gcc`, as bench/infer.py does. No board, no dataset.

    python bench/mac_callgrind.py [--n 8]

For each model of bench/infer.py (42-32-16-7, 128-128-128), one harness for both sides: the
instructions callgrind counts (Ir) for a process that runs N forward passes and for the same
process running 2N. Their difference is N forward passes without the harness's fixed cost
(starting the process, importing and compiling, loading the model, filling the weights):

- viper: `micropython` calling `Model.forward()` of device/infer.py (kernel "viper") N or 2N
  times in a loop (so one bytecode loop turn and method call per forward are counted);
- C: bench/mac_loop.c built as bench/infer.py builds it (gcc -O2, no auto-vectorisation),
  `mac_loop SIZES -n N`: N or 2N calls of its forward pass.

Per MAC = difference / (N x MACs of the model): the dense loop with its per-row work (bias,
rounding, clamp, activation) and per-call work, which is what a forward pass costs. Counts
repeat exactly from run to run (PYTHONHASHSEED=0: the `micropython` of PyPI runs the port
inside a CPython process, whose randomized string hashes otherwise move the counts by about
100k instructions). See bench/README.md.
"""

import argparse
import importlib.util
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_bench(name):
    spec = importlib.util.spec_from_file_location("bench_" + name, ROOT / "bench" / (name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_INFER = _load_bench("infer")
BenchError = _INFER.BenchError

FORWARD = """
import sys
from device.infer import Model
m = Model(sys.argv[1], kernel="viper")
forward = m.forward
for _ in range(int(sys.argv[2])):
    forward()
"""


def instructions(tools, cmd, env=None):
    """Instructions the process `cmd` runs, as callgrind counts them (its `Collected` line)."""
    argv = [tools["valgrind"], "--tool=callgrind", "--callgrind-out-file=/dev/null"] + cmd
    out = _INFER.run(argv, env=env).stderr
    found = re.search(r"Collected : (\d+)", out)
    if not found:
        raise BenchError("callgrind printed no count for %s:\n%s" % (" ".join(cmd), out[-2000:]))
    return int(found.group(1))


def per_mac(tools, cmd, n, macs, env=None):
    """(instructions of `cmd 2n` - of `cmd n`) / (n x macs): cmd's last argument is the count."""
    twice = instructions(tools, cmd + [str(2 * n)], env)
    return (twice - instructions(tools, cmd + [str(n)], env)) / (n * macs)


def measure(tools, n, folder):
    exe = str(Path(folder) / "mac_loop")
    _INFER.run([tools["cc"], *_INFER.C_FLAGS, "-o", exe, str(ROOT / "bench" / "mac_loop.c")])
    paths = _INFER.write_models(folder)
    # PyPI's `micropython` is a CPython script around the port: a fixed hash seed keeps its
    # dictionaries, and so the counts, the same from run to run
    env = {"MICROPYPATH": str(ROOT), "PATH": "", "PYTHONHASHSEED": "0"}
    rows = []
    for name, sizes in _INFER.MODELS.items():
        macs = _INFER.macs_of(sizes)
        mp = [tools["micropython"], "-c", FORWARD, paths[name]]
        viper = per_mac(tools, mp, n, macs, env)
        c = per_mac(tools, [exe, ",".join(map(str, sizes)), "-n"], n, macs)
        rows.append([name, macs, "%.1f" % viper, "%.1f" % c, "%.2fx" % (viper / c)])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="forward passes (the difference of N, 2N)")
    args = ap.parse_args()
    try:
        tools = _INFER.find_tools()
        tools["valgrind"] = _INFER.find_tool("VALGRIND", "valgrind", "apt-get install valgrind")
        with tempfile.TemporaryDirectory(prefix="microprop-callgrind-") as tmp:
            rows = measure(tools, args.n, tmp)
    except BenchError as e:
        print("bench: %s" % e, file=sys.stderr)
        return 1
    print("x64 instructions per MAC of a forward pass (callgrind; N = %d and 2N)" % args.n)
    print("  micropython: %s" % _INFER.version([tools["micropython"], "--version"]))
    print(
        "  C compiler:  %s, %s"
        % (_INFER.version([tools["cc"], "--version"]), " ".join(_INFER.C_FLAGS))
    )
    headers = ["model", "MACs", "viper insn/MAC", "C -O2 insn/MAC", "viper/C"]
    print(_INFER.table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
