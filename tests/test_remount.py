"""host/remount.py: a re-mounted sensor turns acceleration and angular rate together, exactly
for quarter turns, clipped at full scale, and only for the subjects it is given."""

import numpy as np
import pytest

from microprop.host import remount, synth
from microprop.host.errors import UserError
from microprop.host.sensorlog import SensorLog


def imu_log(counts, subjects, full_scale=None):
    n = len(counts)
    return SensorLog(
        channels=["ax", "ay", "az", "gx", "gy", "gz"],
        counts=np.asarray(counts, dtype=np.int32),
        labels=np.array(["a"] * n, dtype=object),
        subjects=np.array(subjects, dtype=object),
        recordings=np.array(["r"] * n, dtype=object),
        rate_hz=50.0,
        full_scale=full_scale,
    )


FS = {
    "ax": (8.0, "g"), "ay": (8.0, "g"), "az": (8.0, "g"),
    "gx": (2000.0, "dps"), "gy": (2000.0, "dps"), "gz": (2000.0, "dps"),
}  # fmt: skip


def test_a_quarter_turn_about_z_maps_x_y_z_to_y_minus_x_z_exactly():
    rng = np.random.default_rng(0)
    counts = rng.integers(-32768, 32768, size=(200, 6))
    counts[0] = [-32768, 5, 7, 1, -32768, 3]
    log = imu_log(counts, ["1"] * 100 + ["2"] * 100, FS)
    out = remount.remount(log, remount.subject_turns(["1"]))
    want = counts.copy()
    for a in (0, 3):
        want[:100, a], want[:100, a + 1] = counts[:100, a + 1], -counts[:100, a]
    want = np.clip(want, -32768, 32767)  # -(-32768) clips
    assert np.array_equal(out.counts, want)
    assert out.counts[0, 1] == 32767 and out.counts[0, 3] == -32768
    assert np.array_equal(log.counts, counts)  # the input is not changed


def test_a_random_turn_is_a_rotation_applied_to_both_sensors_alike():
    rng = np.random.default_rng(1)
    turns = [remount.random_turn(rng) for _ in range(2000)]
    for r in turns[:20]:
        assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1.0)
    assert np.abs(np.mean(turns, axis=0)).max() < 0.05  # uniform: the mean rotation is 0
    counts = np.tile([1000, -2000, 3000, 1000, -2000, 3000], (50, 1))
    log = imu_log(counts, ["7"] * 50)  # no full scale: turned in counts
    r = turns[0]
    out = remount.remount(log, {"7": r})
    want = np.round(np.array([1000, -2000, 3000]) @ r)
    assert np.abs(out.counts[:, :3] - want).max() <= 0.5
    assert np.array_equal(out.counts[:, :3], out.counts[:, 3:])
    assert np.allclose(
        np.linalg.norm(out.counts[0, :3]), np.linalg.norm([1000, -2000, 3000]), atol=1
    )


def test_turned_values_clip_at_full_scale_and_seeds_draw_one_turn_per_subject():
    log = imu_log([[32767, 32767, 0, 0, 0, 0]], ["1"], FS)
    out = remount.remount(log, {"1": remount.turn_about_z(45)})
    assert out.counts[0, 0] == 32767 and out.counts[0, 1] == 0  # |v| = 46340 counts, clipped
    a = remount.subject_turns(["8", "9", "10"], seed=3)
    b = remount.subject_turns(["8", "9", "10"], seed=3)
    assert all(np.array_equal(a[s], b[s]) for s in a)
    assert not np.allclose(a["8"], a["9"])
    assert remount.describe(None).startswith("turned 90 degrees about z")


def test_accelerometer_only_logs_turn_and_bad_requests_are_one_line_errors():
    log = synth.generate(seed=0, subjects=3, seconds_per_activity=2)
    out = remount.remount(log, remount.subject_turns(["s2"]))
    s2 = np.asarray(log.subjects) == "s2"
    assert np.array_equal(out.counts[~s2], log.counts[~s2])
    assert np.array_equal(out.counts[s2, 0], log.counts[s2, 1])
    with pytest.raises(UserError, match="no rows of subject"):
        remount.remount(log, remount.subject_turns(["s9"]))
    two = imu_log([[1, 2, 3, 4, 5, 6]], ["1"])
    two.channels = ["ax", "ay", "gz", "q", "r", "s"]
    with pytest.raises(UserError, match="has ax,ay but not az"):
        remount.remount(two, {"1": np.eye(3)})
    two.channels = ["p", "q", "r", "s", "t", "u"]
    with pytest.raises(UserError, match="no axis triple"):
        remount.remount(two, {"1": np.eye(3)})
    mixed = imu_log([[1, 2, 3, 4, 5, 6]], ["1"], dict(FS, az=(80.0, "m/s2")))
    with pytest.raises(UserError, match="one full-scale unit"):
        remount.remount(mixed, {"1": np.eye(3)})
