"""On-board adaptation to new wearers: integer (board-exact) vs float SGD, before and after.

Runs on: host. Needs the shared datasets for `--data shoulder` (the default).

The protocol of host/adapt.py: a model trained on subjects 1-7, the rates chosen
leave-one-subject-out on 1-7, each of 8-10 adapting on its first 5 windows per class and
evaluated on its windows that share no sample with them. Prints the full table per seed (the
seed drives the model's training, the shuffles and the stochastic rounding) and, for several
seeds, the mean gains over them.

    python bench/adapt.py [--data shoulder] [--seeds 0] [--epochs 10] [--modes last,bias,all]
                          [--remount] [--remount-seed S] [--learn-mount]

--remount turns each test subject's accelerometer and gyroscope 90 degrees about z, as a
re-mounted board reads them (--remount-seed S: one random rotation per subject from S, the
same for every seed of --seeds); the model is trained on subjects 1-7 as recorded, and the
rates are chosen with each left-out one turned alike (host/remount.py). --learn-mount: the
board's mount search (host/mount.py) on each wearer's adaptation windows comes first, in the
rate selection's folds too, and the layers then learn in the orientation it found.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from microprop.host import adapt, pipeline  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="shoulder")
    ap.add_argument("--train-subjects", default="1,2,3,4,5,6,7")
    ap.add_argument("--test-subjects", default="8,9,10")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, help="default: chosen with the rates")
    ap.add_argument("--per-class", type=int, default=adapt.PER_CLASS)
    ap.add_argument("--modes", default="last,bias,all")
    ap.add_argument("--remount", action="store_true", help="turn the test subjects' sensor")
    ap.add_argument("--remount-seed", type=int, help="one random turn per subject (--remount)")
    ap.add_argument(
        "--learn-mount", action="store_true", help="the board's mount search before learning"
    )
    args = ap.parse_args()
    modes = tuple(args.modes.split(","))
    ds = pipeline.make_dataset(pipeline.load_log(args.data), source=args.data)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.perf_counter()
        r = adapt.run_adaptation(
            ds, args.train_subjects.split(","), args.test_subjects.split(","), modes=modes,
            epochs=args.epochs, seed=seed, per_class=args.per_class,
            remount_sensor=args.remount, remount_seed=args.remount_seed,
            ceiling=args.remount or args.remount_seed is not None, learn_mount=args.learn_mount,
        )  # fmt: skip
        print("== seed %d (%.1f s)" % (seed, time.perf_counter() - t0))
        print(adapt.format_adaptation(r))
        print()
        results.append(r)
    if len(results) > 1:
        print("== mean over seeds %s (gains in points)" % args.seeds)
        for m in modes:
            ig = [100 * r["mean"][m]["int_gain"] for r in results]
            fg = [100 * r["mean"][m]["float_gain"] for r in results]
            ok = sum(r["accepted"][m] for r in results)
            n = len(results)
            print(
                "%-4s integer gain %+.2f (sd %.2f, se %.2f), float gain %+.2f (sd %.2f, se %.2f); "
                "ratio of the mean gains %.2f; accepted in %d of %d seeds"
                % (m, np.mean(ig), np.std(ig), np.std(ig) / n**0.5, np.mean(fg), np.std(fg),
                   np.std(fg) / n**0.5, np.mean(ig) / np.mean(fg) if np.mean(fg) > 0 else np.nan,
                   ok, n)
            )  # fmt: skip
        print("mean accuracy over seeds (%): before (the generic model) -> after")
        for m in modes:
            mean = {
                k: 100 * np.mean([r["mean"][m][k] for r in results])
                for k in ("int_before", "int_after", "float_before", "float_after")
            }
            print(
                "%-4s int8 %.1f -> %.1f, float %.1f -> %.1f"
                % (m, mean["int_before"], mean["int_after"], mean["float_before"],
                   mean["float_after"])
            )  # fmt: skip
        if results[0].get("mounts"):
            first = modes[0]
            print(
                "with the mount alone (mount search, no layer learning): int8 %.1f, float %.1f"
                % (100 * np.mean([r["mean"][first]["int_mounted"] for r in results]),
                   100 * np.mean([r["mean"][first]["float_mounted"] for r in results]))
            )  # fmt: skip
        ceilings = [r["ceiling"] for r in results if r.get("ceiling")]
        if ceilings:
            print(
                "ceiling (a model trained on the turned training subjects): int8 %.1f, float %.1f"
                % (100 * np.mean([c["int8"] for c in ceilings]),
                   100 * np.mean([c["float"] for c in ceilings]))
            )  # fmt: skip
        print("where the gain lands, mean over seeds (points): recordings adapted on / other ones")
        for m in modes:
            parts = []
            for kind in ("int", "float"):
                for part in ("same", "other"):
                    g = [
                        100 * (r["mean"][m]["%s_after_%s" % (kind, part)]
                               - r["mean"][m]["%s_before_%s" % (kind, part)])
                        for r in results
                    ]  # fmt: skip
                    parts.append(np.mean(g))
            print("%-4s integer %+.2f / %+.2f, float %+.2f / %+.2f" % ((m,) + tuple(parts)))


if __name__ == "__main__":
    main()
