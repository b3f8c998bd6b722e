"""Reading a large sensor log: rows per second and peak memory per row.

Runs on: host (Linux: memory from /proc/self/statm and getrusage). No board, no dataset.

    python bench/read_log.py [--rows 750000] [--keep FOLDER]

Writes two logs shaped like a public smartphone IMU data set (30 subjects, one recording each,
50 Hz, accelerometer and gyroscope ax..gz, activity labels 1..12 with unlabelled transitions
labelled -1, a t_ms column): one in integer counts, one in physical units (g and rad/s with
four decimals, `values=physical` and a full scale on the first line, converted to counts while
reading). Each log is then read by `host.sensorlog.read_sensor_log` in a fresh Python process,
as it is and with `ignore_labels=["-1"]`, and the script prints:

- rows/s: data rows of the file per second of `read_sensor_log` (wall clock);
- peak B/row: the process's peak resident memory (VmHWM) minus its resident memory just
  before the read (numpy and host imported), divided by the rows of the file;
- kept rows and the splits the reader made (where unlabelled rows were left out).

The goal of issue 17: at least 200k rows per second and at most 100 bytes per row on a
generated log of 750k rows. See bench/README.md.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

SUBJECTS = 30
RATE_HZ = 50
ACCEL_G, GYRO_RAD_S = 8.0, 34.9  # full scales: +/-8 g, +/-2000 deg/s


def generate(path, rows, physical, seed=0):
    """A log of `rows` rows: per subject one recording of activity runs of 10-20 s, each
    followed by a 2-4 s transition labelled -1."""
    rng = np.random.default_rng(seed)
    per_subject = rows // SUBJECTS
    labels = np.empty(rows, dtype=np.int64)
    k = 0
    while k < rows:
        n = int(rng.integers(10, 20) * RATE_HZ)
        labels[k : k + n] = rng.integers(1, 13)
        k += n
        n = int(rng.integers(2, 4) * RATE_HZ)
        labels[k : k + n] = -1
        k += n
    subject = np.minimum(np.arange(rows) // per_subject, SUBJECTS - 1) + 1
    first = np.searchsorted(subject, subject)  # each subject's first row
    t_ms = (np.arange(rows) - first) * 1000 // RATE_HZ
    t = np.arange(rows) / RATE_HZ
    motion = np.sin(2 * np.pi * (0.5 + labels[:, None] % 4) * t[:, None] + np.arange(6))
    values = 0.3 * motion + 0.05 * rng.standard_normal((rows, 6))
    values[:, 2] += 1.0  # gravity on z
    with open(path, "w") as f:
        if physical:
            f.write(
                "# sensor=phone rate_hz=%d values=physical full_scale=ax:%gg,ay:%gg,az:%gg,"
                "gx:%grad/s,gy:%grad/s,gz:%grad/s\n"
                % ((RATE_HZ,) + (ACCEL_G,) * 3 + (GYRO_RAD_S,) * 3)
            )
        else:
            f.write("# sensor=phone rate_hz=%d values=counts\n" % RATE_HZ)
            values = np.round(values * 4096).astype(np.int64)
        f.write("ax,ay,az,gx,gy,gz,label,subject,recording,t_ms\n")
        cell = "%.4f" if physical else "%d"
        row = ",".join([cell] * 6) + ",%d,%d,exp%02d,%d\n"
        for i in range(0, rows, 50000):
            part = slice(i, i + 50000)
            f.writelines(
                row % (*v, lab, s, s, tm)
                for v, lab, s, tm in zip(
                    values[part].tolist(),
                    labels[part].tolist(),
                    subject[part].tolist(),
                    t_ms[part].tolist(),
                    strict=True,
                )
            )


# VmHWM, not getrusage's ru_maxrss: Linux keeps the maxrss of the process that forked this one
# (the generator's) across fork and exec.
_MEASURE = r"""
import json, sys, time
sys.path.insert(0, %(root)r)
import numpy as np
from host.sensorlog import read_sensor_log

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

before = status("VmRSS")
t0 = time.perf_counter()
log = read_sensor_log(%(path)r, ignore_labels=%(ignore)r)
seconds = time.perf_counter() - t0
peak = status("VmHWM")
print(json.dumps({"seconds": seconds, "peak": peak - before, "kept": len(log),
                  "rows": log.splits["rows"], "splits": log.splits["ignore_splits"],
                  "gap_splits": log.splits["gap_splits"], "final": sum(
                      a.nbytes for a in (log.counts, log.t_ms, log.labels, log.subjects))}))
"""


def measure(path, ignore):
    code = _MEASURE % {"root": str(ROOT), "path": str(path), "ignore": list(ignore)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=750_000)
    ap.add_argument("--keep", metavar="FOLDER", help="write the logs here and keep them")
    args = ap.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="read_log-")
    os.makedirs(folder, exist_ok=True)
    print(
        "| log | MB | rows | ignored | kept | splits | seconds | rows/s | peak MB | peak B/row |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for name, physical in (("counts", False), ("physical", True)):
        path = Path(folder) / ("imu-%s.csv" % name)
        if not path.exists():
            generate(path, args.rows, physical)
        for ignore in ([], ["-1"]):
            m = measure(path, ignore)
            print(
                "| %s | %.1f | %d | %s | %d | %d | %.2f | %.0fk | %.1f | %.0f |"
                % (
                    name,
                    path.stat().st_size / 1e6,
                    m["rows"],
                    ",".join(ignore) or "-",
                    m["kept"],
                    m["splits"],
                    m["seconds"],
                    m["rows"] / m["seconds"] / 1000,
                    m["peak"] / 1e6,
                    m["peak"] / m["rows"],
                )
            )
    if not args.keep:
        for p in Path(folder).iterdir():
            p.unlink()
        os.rmdir(folder)


if __name__ == "__main__":
    main()
