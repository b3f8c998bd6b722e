"""microprop's NumPy trainer against scikit-learn's MLPClassifier on the same features.

Runs on: host. Needs the shared datasets and scikit-learn (`pip install 'microprop[bench]'`).

Protocol (issue 2): shoulder exercises, 2 s windows (100 samples at 50 Hz), 50 % overlap,
subjects 1-7 train, 8-10 test, microprop's integer window features. scikit-learn gets
StandardScaler + MLPClassifier(hidden_layer_sizes=<same>, solver="adam", max_iter=500,
random_state=seed) on the raw integer features; microprop trains on its input stage's integers
(what the board feeds the network). Mean over 3 seeds each; wall-clock training time.

    python bench/train_vs_sklearn.py [--hidden 32,16] [--seeds 0,1,2] [--data shoulder]
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from microprop.host import pipeline  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", default="32,16")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--data", default="shoulder")
    ap.add_argument("--test-subjects", default="8,9,10")
    args = ap.parse_args()
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        sys.exit("bench: scikit-learn is missing: pip install 'microprop[bench]'")
    hidden = tuple(int(v) for v in args.hidden.split(","))
    seeds = [int(v) for v in args.seeds.split(",")]
    test_subjects = args.test_subjects.split(",")

    t0 = time.perf_counter()
    log = pipeline.load_log(args.data)
    ds = pipeline.make_dataset(log, source=args.data)
    print(
        "data %s: %d windows of %d samples, %d features, load + features %.2f s"
        % (args.data, len(ds.labels), ds.window, ds.X.shape[1], time.perf_counter() - t0)
    )
    test = np.isin(ds.subjects, test_subjects)
    rows = []
    for seed in seeds:
        t = time.perf_counter()
        mlp, meta, report, history = pipeline.train_model(
            ds, hidden=hidden, test_subjects=test_subjects, seed=seed
        )
        ours = (report["accuracy"], time.perf_counter() - t, history["epochs_run"])

        clf = make_pipeline(
            StandardScaler(),
            MLPClassifier(
                hidden_layer_sizes=hidden, solver="adam", max_iter=500, random_state=seed
            ),
        )
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(ds.X[~test].astype(np.float64), ds.labels[~test])
        sk_time = time.perf_counter() - t
        sk_acc = float((clf.predict(ds.X[test].astype(np.float64)) == ds.labels[test]).mean())
        theirs = (sk_acc, sk_time, clf[-1].n_iter_)
        rows.append((seed, ours, theirs))
        print(
            "seed %d  microprop acc %.4f  %.2f s (%d epochs)   sklearn acc %.4f  %.2f s (%d it)"
            % (seed, *ours, *theirs)
        )
    ours_acc = np.mean([r[1][0] for r in rows])
    ours_t = np.mean([r[1][1] for r in rows])
    sk_acc = np.mean([r[2][0] for r in rows])
    sk_t = np.mean([r[2][1] for r in rows])
    print()
    print(
        "hidden %s, test subjects %s, mean of %d seeds"
        % (hidden, ",".join(test_subjects), len(seeds))
    )
    print("microprop   accuracy %.4f   train time %.2f s" % (ours_acc, ours_t))
    print("sklearn     accuracy %.4f   train time %.2f s" % (sk_acc, sk_t))
    print(
        "difference  %+.2f points   time ratio microprop/sklearn %.2f"
        % (100 * (ours_acc - sk_acc), ours_t / sk_t)
    )
    ok = ours_acc >= sk_acc - 0.01 and ours_t <= sk_t
    print("goal (>= sklearn - 1 point, no slower): %s" % ("met" if ok else "NOT met"))


if __name__ == "__main__":
    main()
