"""A re-mounted sensor: some subjects' accelerometer and gyroscope turned as one rigid body.

Runs on: host.

A board re-mounted on the wrist, in another enclosure or with another axis convention sees the
same motion in a turned frame: every vector it measures, acceleration and angular rate alike,
is multiplied by the same rotation. `remount(log, turns)` does that to the rows of the subjects
in `turns` ({subject: 3x3 rotation matrix}): for each axis triple of the log (`AXES`: ax, ay, az
and gx, gy, gz; a log may have one or both), the counts become physical values at the log's
full scale, the vector v becomes R^T v (the sensor turned by R reads the unchanged motion in its
own turned frame), and the values go back to int16 counts with `sensorlog.to_counts` (round half
away from zero, clipped at full scale, as the sensor itself would clip). A log without a full
scale is turned in counts, which assumes the three axes of a triple share one scale.

Turns:
- `turn_about_z(degrees)`: about the axis normal to the board; 90 degrees, the default of
  `microprop adapt --remount`, maps (x, y, z) to (y, -x, z), exactly (counts stay integers,
  only -32768 clips to 32767);
- `random_turn(rng)`: uniform on all rotations (a unit quaternion of four normal draws);
- `subject_turns(subjects, seed)`: one turn per subject, 90 degrees about z for all when `seed`
  is None, else one `random_turn` per subject in the given order from `seed`.
"""

import math
from dataclasses import replace

import numpy as np

from microprop.device.mount import AXES  # accelerometer, gyroscope: the IMU driver's names

from . import pipeline
from .errors import UserError
from .sensorlog import COUNTS_FULL, to_counts


def turn_about_z(degrees=90.0):
    """The rotation by `degrees` about z; exact for multiples of 90 degrees."""
    quarter = degrees / 90.0
    if quarter == round(quarter):
        c, s = ((1, 0), (0, 1), (-1, 0), (0, -1))[int(round(quarter)) % 4]
    else:
        c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def random_turn(rng):
    """A rotation drawn uniformly (Haar measure) with numpy Generator `rng`."""
    q = rng.standard_normal(4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def subject_turns(subjects, seed=None):
    """{subject: rotation}: 90 degrees about z for each when `seed` is None, else one uniformly
    random rotation per subject, drawn in the order given from `seed`."""
    if seed is None:
        return {str(s): turn_about_z(90) for s in subjects}
    rng = np.random.default_rng(seed)
    return {str(s): random_turn(rng) for s in subjects}


def describe(seed=None):
    """How `subject_turns(..., seed)` turns the sensors, in words."""
    if seed is None:
        return "turned 90 degrees about z (the axis normal to the board)"
    return "turned by a uniformly random rotation per subject (seed %d)" % seed


def axis_triples(log):
    """The triples of AXES that `log` has, as column indices; an error when it has none, or
    only part of a triple."""
    found = []
    for triple in AXES:
        have = [name in log.channels for name in triple]
        if all(have):
            found.append([log.channels.index(name) for name in triple])
        elif any(have):
            raise UserError(
                "remount: the log has %s but not %s: a turn needs all three axes"
                % (
                    ",".join(n for n, h in zip(triple, have, strict=True) if h),
                    ",".join(n for n, h in zip(triple, have, strict=True) if not h),
                ),
                path=log.path,
            )
    if not found:
        raise UserError(
            "remount: the log has no axis triple to turn (channels %s; expected ax,ay,az "
            "and/or gx,gy,gz)" % ",".join(log.channels),
            path=log.path,
        )
    return found


def _scales(log, cols):
    """Physical value per count for the columns of one triple (1.0 each without a full scale);
    an error when the three axes have different units."""
    fs = log.full_scale or {}
    given = [fs.get(log.channels[c]) for c in cols]
    if not any(given):
        return np.ones(3)
    if not all(given) or len({unit for _, unit in given}) != 1:
        raise UserError(
            "remount: the axes %s need one full-scale unit each to be turned together (got %s)"
            % (",".join(log.channels[c] for c in cols), given),
            path=log.path,
        )
    return np.array([value for value, _ in given], dtype=np.float64) / COUNTS_FULL


def remount(log, turns):
    """A copy of `log` with the rows of each subject in `turns` ({subject: 3x3 rotation})
    read by a sensor turned by that rotation (module docstring); other rows unchanged."""
    triples = [(cols, _scales(log, cols)) for cols in axis_triples(log)]
    counts = np.array(log.counts, dtype=np.int64, copy=True)
    subjects = np.asarray(log.subjects).astype(str)
    missing = sorted(set(turns) - set(subjects.tolist()))
    if missing:
        raise UserError("remount: no rows of subject(s) %s" % ",".join(missing), path=log.path)
    for subject, r in turns.items():
        rows = subjects == subject
        for cols, scale in triples:
            physical = counts[np.ix_(rows, cols)] * scale
            turned = physical @ np.asarray(r, dtype=np.float64)  # rows of (R^T v)^T = v^T R
            for k, c in enumerate(cols):
                fs = scale[k] * COUNTS_FULL
                counts[rows, c] = to_counts(turned[:, k], fs)
    return replace(log, counts=counts.astype(log.counts.dtype, copy=False))


def remount_dataset(ds, turns):
    """A pipeline.Dataset like `ds` (same window, hop and source) of its log with the rows of
    the subjects in `turns` turned (`remount`)."""
    if not turns:
        return ds
    return pipeline.make_dataset(remount(ds.log, turns), ds.window, ds.hop, ds.source)
