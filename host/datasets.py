"""The shared real sensor datasets, loaded as SensorLogs in the counts a board would read.

Runs on: host.

The files live in `<project root>/../shared/datasets/` (see its README.md). The project does
not need them to run; tests and benchmarks use them when present.
"""

import math
from pathlib import Path

import numpy as np

from .errors import DataError
from .sensorlog import SensorLog, read_sensor_log, read_sensor_table, to_counts

ROOT = Path(__file__).resolve().parent.parent
IMU_CHANNELS = ["ax", "ay", "az", "gx", "gy", "gz"]
ACCEL_FULL_SCALE_G = 8.0  # +/-8 g: 4096 counts per g
GYRO_FULL_SCALE_DPS = 2000.0  # +/-2000 deg/s: 16.384 counts per deg/s


def find_datasets():
    """Path of the shared datasets folder, or None when it is absent."""
    path = ROOT.parent / "shared" / "datasets"
    return path if path.is_dir() else None


def _dataset_file(root, name):
    root = find_datasets() if root is None else Path(root)
    if root is None:
        raise DataError("datasets: shared datasets folder not found, expected ../shared/datasets")
    path = root / name
    if not path.exists():
        raise DataError("datasets: file not found", path)
    return path


def load_shoulder(root=None):
    """Shoulder physiotherapy exercises (Burns et al. 2018) -> SensorLog, 50 Hz, 7 classes.

    Accelerometer in g at +/-8 g full scale (4096 counts per g); gyroscope taken as rad/s
    (the README's best guess), converted to deg/s at +/-2000 deg/s full scale (16.384 counts
    per deg/s), as an MPU6050 reports at those settings. Subjects and recordings come from the
    file; `meta['side']` is not kept (the per-sample `side` column is ignored).
    """
    path = _dataset_file(root, "shoulder_exercises.csv.gz")
    gyro_rad_s = GYRO_FULL_SCALE_DPS * math.pi / 180.0
    full_scale = {ch: (ACCEL_FULL_SCALE_G, "g") for ch in IMU_CHANNELS[:3]}
    full_scale.update({ch: (gyro_rad_s, "rad/s") for ch in IMU_CHANNELS[3:]})
    log = read_sensor_log(path, channels=IMU_CHANNELS, full_scale=full_scale, rate_hz=50.0)
    log.full_scale = {ch: (ACCEL_FULL_SCALE_G, "g") for ch in IMU_CHANNELS[:3]}
    log.full_scale.update({ch: (GYRO_FULL_SCALE_DPS, "dps") for ch in IMU_CHANNELS[3:]})
    log.meta.update(dataset="shoulder_exercises", sensor="smartwatch")
    return log


def load_basic_motions(root=None):
    """BasicMotions (UEA archive) -> SensorLog, 10 Hz, 4 classes, 80 cases of 100 samples.

    The units are undocumented, so each sensor group (accelerometer ax..az, gyroscope gx..gz)
    is scaled by the data's own largest |value|: full scale = that value in arbitrary units
    ("au"), so the largest sample maps to +/-32767 counts. This is recorded in `full_scale`
    and `meta['scaling']` ('max_abs_per_sensor_group'). The file has no subject ids:
    `recordings` holds the case number and `subjects` holds the archive's own split ('train'
    or 'test'), so `subject_split(log.subjects, ['test'])` reproduces the archive's split.
    """
    path = _dataset_file(root, "basic_motions.csv")
    table = read_sensor_table(
        path, channels=IMU_CHANNELS, subject_col="split", recording_col="case"
    )
    counts = np.empty(table.values.shape, dtype=np.int64)
    full_scale = {}
    for group in (IMU_CHANNELS[:3], IMU_CHANNELS[3:]):
        j = [IMU_CHANNELS.index(ch) for ch in group]
        fs = float(np.abs(table.values[:, j]).max())
        for k, ch in zip(j, group, strict=True):
            counts[:, k] = to_counts(table.values[:, k], fs)
            full_scale[ch] = (fs, "au")
    return SensorLog(
        channels=list(IMU_CHANNELS),
        counts=counts,
        labels=table.labels,
        subjects=table.subjects,
        recordings=table.recordings,
        rate_hz=10.0,
        full_scale=full_scale,
        meta={
            "dataset": "basic_motions",
            "sensor": "smartwatch",
            "scaling": "max_abs_per_sensor_group",  # units undocumented
            "subjects": "archive_split",  # no subject ids in the data
        },
        path=str(path),
    )
