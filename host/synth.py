"""Synthetic wearable accelerometer data: idle, walking, running, shaking.

Runs on: host.

The default data of the demo and of quick tests: a 3-axis accelerometer in int16 counts at
+/-8 g (4096 counts per g), one recording per wearer and activity, deterministic from the seed
(same arguments -> identical arrays). The model, per wearer:

- sensor orientation: a random rotation of the body frame (gravity and motion together),
  perturbed by up to about 10 degrees per recording (the device sits a little differently);
- rhythm: walking step frequency 1.5-2.2 Hz, running 2.1-3.0 Hz (fast walkers and slow
  runners overlap), drifting by a few percent within a recording;
- amplitude: walking 0.2-0.7 g, running 0.6-1.8 g of vertical acceleration, with forward and
  lateral (half step rate) components and a small body sway that tilts gravity;
- idle: gravity with small slow tilt drifts and occasional fidgets;
- shaking: irregular 3.5-8 Hz motion in changing directions with a bursty envelope,
  1-3 g, the device tumbling through +/-30 degrees;
- sensor noise 0.004-0.015 g rms (white), plus clipping at the full scale.
"""

import numpy as np

from .sensorlog import SensorLog, to_counts

CLASSES = ("idle", "walking", "running", "shaking")
CHANNELS = ["ax", "ay", "az"]
FULL_SCALE_G = 8.0


def _random_rotation(rng):
    """Uniformly random 3x3 rotation matrix (from a random unit quaternion)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _small_rotation(rng, degrees):
    """Rotation by a random angle up to `degrees` about a random axis (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(0, degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _smooth(rng, t, max_hz, terms=4):
    """Smooth random signal of unit-ish amplitude: a few sinusoids below `max_hz`."""
    out = np.zeros_like(t)
    for _ in range(terms):
        out += np.sin(2 * np.pi * rng.uniform(0.02, max_hz) * t + rng.uniform(0, 2 * np.pi))
    return out / np.sqrt(terms / 2)


def _tilted_gravity(ax, ay):
    """Unit gravity vectors (n, 3) in the body frame tilted by small angles ax, ay (radians)."""
    g = np.stack([np.sin(ay), -np.sin(ax) * np.cos(ay), np.cos(ax) * np.cos(ay)], axis=1)
    return g


def _wearer(rng):
    return {
        "rotation": _small_rotation(rng, 40.0),
        "walk_hz": rng.uniform(1.5, 2.1),
        "run_hz": rng.uniform(2.3, 3.0),
        "walk_g": rng.uniform(0.2, 0.6),
        "run_g": rng.uniform(0.7, 1.8),
        "shake_g": rng.uniform(1.5, 3.0),
        "noise_g": rng.uniform(0.004, 0.015),
        "sway_rad": np.radians(rng.uniform(2, 8)),
    }


def _idle(rng, t, who):
    tilt = np.radians(rng.uniform(1, 4))
    ax = tilt * _smooth(rng, t, 0.05)
    ay = tilt * _smooth(rng, t, 0.05)
    a = _tilted_gravity(ax, ay)
    # Occasional fidgets: short bumps of up to 0.1 g.
    for _ in range(rng.poisson(len(t) / 1500)):
        c = rng.uniform(t[0], t[-1])
        a += rng.uniform(0.02, 0.1) * rng.normal(size=3) * np.exp(-(((t - c) / 0.2) ** 2))[:, None]
    return a


def _gait(rng, t, who, hz, amp, sharp):
    """Walking (sharp=False) or running (sharp=True) in the body frame, gravity included."""
    f = hz * rng.uniform(0.95, 1.05) * (1 + 0.03 * _smooth(rng, t, 0.1))
    phase = 2 * np.pi * np.cumsum(f) / (1 / (t[1] - t[0])) + rng.uniform(0, 2 * np.pi)
    amp = amp * rng.uniform(0.9, 1.1) * (1 + 0.1 * _smooth(rng, t, 0.2))
    if sharp:  # impacts: a peaked pulse per step, zero mean
        vertical = amp * 2.2 * (np.maximum(np.sin(phase), 0) ** 3 - 2 / (3 * np.pi))
    else:
        vertical = amp * (np.sin(phase) + 0.35 * np.sin(2 * phase + 1.0))
    forward = 0.5 * amp * np.sin(phase + np.pi / 2)
    lateral = 0.3 * amp * np.sin(phase / 2)
    sway = who["sway_rad"] * (1.5 if sharp else 1.0)
    g = _tilted_gravity(sway * np.sin(phase / 2), 0.5 * sway * np.sin(phase))
    return g + np.stack([forward, lateral, vertical], axis=1)


def _shaking(rng, t, who):
    rate = 1 / (t[1] - t[0])
    a = np.zeros((len(t), 3))
    for _ in range(3):
        f = rng.uniform(3.5, 8.0) * (1 + 0.25 * _smooth(rng, t, 0.5))
        phase = 2 * np.pi * np.cumsum(f) / rate + rng.uniform(0, 2 * np.pi)
        direction = rng.normal(size=3) + 0.5 * np.stack(
            [_smooth(rng, t, 0.3) for _ in range(3)], axis=1
        )
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        a += rng.uniform(0.5, 1.0) * np.sin(phase)[:, None] * direction
    envelope = np.clip(0.75 + 0.35 * _smooth(rng, t, 0.4), 0.4, 1.2)
    a *= (who["shake_g"] * envelope / 1.2)[:, None]
    tumble = np.radians(30) * envelope / 1.2
    g = _tilted_gravity(tumble * _smooth(rng, t, 4.0), tumble * _smooth(rng, t, 4.0))
    return g + a


def generate(seed=0, subjects=8, seconds_per_activity=60, rate_hz=50):
    """Synthetic accelerometer SensorLog in counts at +/-8 g: 4 classes, one recording each.

    Subjects are 's1', 's2', ...; recordings '<subject>-<activity>'; t_ms restarts at 0 in
    each recording.
    """
    if subjects < 1 or seconds_per_activity <= 0 or rate_hz <= 0:
        raise ValueError(
            "synth: expected subjects >= 1, seconds > 0, rate_hz > 0, found %r, %r, %r"
            % (subjects, seconds_per_activity, rate_hz)
        )
    rng = np.random.default_rng(seed)
    n = int(round(seconds_per_activity * rate_hz))
    if n < 2:
        raise ValueError("synth: expected at least 2 samples per recording, found %d" % n)
    t = np.arange(n) / rate_hz
    parts = []
    for k in range(subjects):
        who = _wearer(rng)
        subject = "s%d" % (k + 1)
        for activity in CLASSES:
            if activity == "idle":
                a = _idle(rng, t, who)
            elif activity == "walking":
                a = _gait(rng, t, who, who["walk_hz"], who["walk_g"], sharp=False)
            elif activity == "running":
                a = _gait(rng, t, who, who["run_hz"], who["run_g"], sharp=True)
            else:
                a = _shaking(rng, t, who)
            rot = who["rotation"] @ _small_rotation(rng, 10.0)
            a = a @ rot.T + who["noise_g"] * rng.normal(size=a.shape)
            parts.append((to_counts(a, FULL_SCALE_G), activity, subject))
    counts = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([np.full(n, p[1]) for p in parts])
    subj = np.concatenate([np.full(n, p[2]) for p in parts])
    recordings = np.char.add(np.char.add(subj, "-"), labels)
    t_ms = np.tile(np.floor(np.arange(n) * 1000.0 / rate_hz).astype(np.int64), len(parts))
    return SensorLog(
        channels=list(CHANNELS),
        counts=counts,
        labels=labels,
        subjects=subj,
        recordings=recordings,
        rate_hz=float(rate_hz),
        full_scale={ch: (FULL_SCALE_G, "g") for ch in CHANNELS},
        meta={"sensor": "synthetic", "seed": str(seed)},
        t_ms=t_ms,
    )
