"""The board's instruction counts against a committed baseline: a regression guard.

Runs on: host. Needs what bench/board.py needs (qemu, the firmware of ../shared/firmware/qemu,
mpremote, mpy-cross).

    python bench/baseline.py                 # run bench/board.py --quick, compare
    python bench/baseline.py --json FILE     # compare a `bench/board.py --json FILE` result
    python bench/baseline.py --update        # run, then write the result as the new baseline

The baseline is bench/board_baseline.json: the instruction counts of `bench/board.py --quick`
(the emulated Cortex-M0 under qemu `-icount`, the 42-32-16-7 model and the demo app), one
figure per name such as `cortex-m0 train all 42-32-16-7 viper`. Counts under `-icount` repeat
from run to run to 1 tick in 4000, so a figure more than `TOLERANCE` (10 %) above its baseline is
a regression, not noise: the check fails and names it. A figure more than 10 % below is
reported as faster, with the hint to update the baseline; updating it is a deliberate commit of
the new file. Heap figures are not compared here (bench/board.py reports and checks them).

Exit status: 0 when no figure regressed, 1 otherwise (or when bench/board.py failed).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "board_baseline.json"
TOLERANCE = 0.10

# bench/board.py's JSON keys that hold instruction counts (nested dicts of numbers), and the
# words that name them here; `spin_insn` (the clock check) and `mac_insn` (forward / MACs) are
# not figures of their own.
COUNTS = {
    "predict_insn": "predict",
    "forward_insn": "forward",
    "train_insn": "train",
    "features_insn": "app features",
    "hop_insn": "app hop",
    "mount_search_insn": "mount search label",
    "app_us_insn": "app us field",
    "app_loop_insn": "app loop per hop",
}


def figures(results):
    """{name: instructions} of a bench/board.py JSON result (one object per CPU); ValueError
    for anything else."""
    if not isinstance(results, dict) or not all(isinstance(v, dict) for v in results.values()):
        raise ValueError("expected one object per CPU")
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k in sorted(value):
                walk(prefix + " " + str(k), value[k])
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix] = value

    for cpu in sorted(results):
        for key, word in COUNTS.items():
            if key in results[cpu]:
                walk("%s %s" % (cpu, word), results[cpu][key])
    return out


def compare(baseline, measured, tolerance=TOLERANCE):
    """(regressed, faster, missing, rows): names whose count is above baseline * (1 + tol),
    below baseline * (1 - tol), or not measured; rows (name, baseline, measured, ratio) for all."""
    regressed, faster, missing, rows = [], [], [], []
    for name in sorted(baseline):
        base = baseline[name]
        if name not in measured:
            missing.append(name)
            rows.append((name, base, None, None))
            continue
        got = measured[name]
        ratio = got / base if base else float("inf")
        rows.append((name, base, got, ratio))
        if got > base * (1 + tolerance):
            regressed.append(name)
        elif got < base * (1 - tolerance):
            faster.append(name)
    return regressed, faster, missing, rows


def report(regressed, faster, missing, rows, tolerance=TOLERANCE):
    """The comparison as text: a table, then one line per finding."""
    width = max([len(r[0]) for r in rows] + [6])
    lines = ["%-*s  %10s  %10s  %6s" % (width, "figure", "baseline", "now", "ratio")]
    for name, base, got, ratio in rows:
        now = "-" if got is None else "%d" % got
        r = "-" if ratio is None else "%.3f" % ratio
        lines.append("%-*s  %10d  %10s  %6s" % (width, name, base, now, r))
    pct = round(tolerance * 100)
    for name in regressed:
        lines.append("REGRESSED by more than %d %%: %s" % (pct, name))
    for name in missing:
        lines.append("NOT MEASURED: %s (bench/board.py no longer reports it)" % name)
    for name in faster:
        lines.append("faster by more than %d %%: %s" % (pct, name))
    if faster and not (regressed or missing):
        lines.append("to keep the gain, update the baseline: python bench/baseline.py --update")
    return "\n".join(lines)


def run_quick(json_path):
    """Run `bench/board.py --quick --json json_path`; its output goes to stderr."""
    cmd = [sys.executable, str(HERE / "board.py"), "--quick", "--json", str(json_path)]
    done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if done.returncode != 0:
        raise SystemExit("baseline: bench/board.py --quick failed (exit %d)" % done.returncode)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="FILE", help="a bench/board.py --json result to compare")
    ap.add_argument(
        "--update", action="store_true", help="write the result as bench/board_baseline.json"
    )
    ap.add_argument(
        "--baseline", metavar="FILE", default=str(BASELINE), help="default: %(default)s"
    )
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="microprop-baseline-") as tmp:
        path = Path(args.json) if args.json else Path(tmp) / "quick.json"
        if not args.json:
            run_quick(path)
        try:
            measured = figures(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            print(
                "baseline: cannot read %s as bench/board.py's JSON: %s" % (path, e),
                file=sys.stderr,
            )
            return 1
    if args.update:
        tmp_file = Path(args.baseline).with_suffix(".tmp")
        tmp_file.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
        tmp_file.replace(args.baseline)
        print("wrote %s: %d figures" % (args.baseline, len(measured)))
        return 0
    try:
        baseline = json.loads(Path(args.baseline).read_text())
    except (OSError, ValueError) as e:
        print("baseline: cannot read %s: %s" % (args.baseline, e), file=sys.stderr)
        return 1
    regressed, faster, missing, rows = compare(baseline, measured)
    print(report(regressed, faster, missing, rows))
    return 1 if regressed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
