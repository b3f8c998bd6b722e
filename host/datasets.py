"""The shared real sensor datasets, loaded as SensorLogs in the counts a board would read.

Runs on: host.

The files (see the folder's README.md) are found in the folder given (`--datasets DIR`, the
`datasets=` argument of microprop.api), else in $MICROPROP_DATASETS, else in
`../shared/datasets` beside a source checkout. An installed wheel holds no data: the project
does not need them to run; tests and benchmarks use them when present.
"""

import math
import os
from pathlib import Path

import numpy as np

from microprop import shared_folder
from microprop.device.sensor_mpu6050 import CHANNELS

from .errors import UserError
from .sensorlog import SensorLog, read_sensor_log, read_sensor_table, to_counts

DATASETS_ENV = "MICROPROP_DATASETS"
FILES = {"shoulder": "shoulder_exercises.csv.gz", "basic_motions": "basic_motions.csv"}
IMU_CHANNELS = list(CHANNELS)  # the IMU driver's names
ACCEL_FULL_SCALE_G = 8.0  # +/-8 g: 4096 counts per g
GYRO_FULL_SCALE_DPS = 2000.0  # +/-2000 deg/s: 16.384 counts per deg/s


def find_datasets(folder=None):
    """The datasets folder -> (Path, where it came from): `folder` if given, else
    $MICROPROP_DATASETS, else ../shared/datasets beside a source checkout; (None, None) when
    none of them applies."""
    if folder:
        return Path(folder), "--datasets %s" % folder
    env = os.environ.get(DATASETS_ENV)
    if env:
        return Path(env), "%s=%s" % (DATASETS_ENV, env)
    shared = shared_folder()
    if shared is not None and (shared / "datasets").is_dir():
        return shared / "datasets", "the source checkout's ../shared/datasets"
    return None, None


def dataset_file(name, folder=None):
    """Path of the shared dataset `name` (a key of FILES), or a UserError saying where it was
    looked for and how to give the folder."""
    root, source = find_datasets(folder)
    hint = "the folder holding %s (the shared datasets)" % " and ".join(FILES.values())
    if root is None:
        raise UserError(
            "datasets: %r needs the shared datasets: give --datasets DIR or set %s"
            % (name, DATASETS_ENV),
            hint=hint,
        )
    path = root / FILES[name]
    if not path.is_file():
        raise UserError(
            "datasets: no %s in %s (from %s): give --datasets DIR or set %s"
            % (FILES[name], root, source, DATASETS_ENV),
            hint=hint,
        )
    return path


def load(name, folder=None):
    """The shared dataset `name` ('shoulder' or 'basic_motions') -> SensorLog, from the folder
    find_datasets(folder) gives."""
    if name not in FILES:
        raise UserError(
            "datasets: unknown dataset %r, expected one of %s" % (name, ", ".join(FILES))
        )
    return (load_shoulder if name == "shoulder" else load_basic_motions)(folder)


def load_shoulder(folder=None):
    """Shoulder physiotherapy exercises (Burns et al. 2018) -> SensorLog, 50 Hz, 7 classes.

    Accelerometer in g at +/-8 g full scale (4096 counts per g); gyroscope taken as rad/s
    (the README's best guess), converted to deg/s at +/-2000 deg/s full scale (16.384 counts
    per deg/s), as an MPU6050 reports at those settings. Subjects and recordings come from the
    file; `meta['side']` is not kept (the per-sample `side` column is ignored). `folder`: as
    find_datasets.
    """
    path = dataset_file("shoulder", folder)
    gyro_rad_s = GYRO_FULL_SCALE_DPS * math.pi / 180.0
    full_scale = {ch: (ACCEL_FULL_SCALE_G, "g") for ch in IMU_CHANNELS[:3]}
    full_scale.update({ch: (gyro_rad_s, "rad/s") for ch in IMU_CHANNELS[3:]})
    log = read_sensor_log(path, channels=IMU_CHANNELS, full_scale=full_scale, rate_hz=50.0)
    log.full_scale = {ch: (ACCEL_FULL_SCALE_G, "g") for ch in IMU_CHANNELS[:3]}
    log.full_scale.update({ch: (GYRO_FULL_SCALE_DPS, "dps") for ch in IMU_CHANNELS[3:]})
    log.meta.update(dataset="shoulder_exercises", sensor="smartwatch")
    return log


def load_basic_motions(folder=None):
    """BasicMotions (UEA archive) -> SensorLog, 10 Hz, 4 classes, 80 cases of 100 samples.

    The units are undocumented, so each sensor group (accelerometer ax..az, gyroscope gx..gz)
    is scaled by the data's own largest |value|: full scale = that value in arbitrary units
    ("au"), so the largest sample maps to +/-32767 counts. This is recorded in `full_scale`
    and `meta['scaling']` ('max_abs_per_sensor_group'). The file has no subject ids:
    `recordings` holds the case number and `subjects` holds the archive's own split ('train'
    or 'test'), so `subject_split(log.subjects, ['test'])` reproduces the archive's split.
    `folder`: as find_datasets.
    """
    path = dataset_file("basic_motions", folder)
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
