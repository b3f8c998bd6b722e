"""board.json settings of the board app: keys, defaults and checks.

Runs on: board and host (MicroPython >= 1.22; CPython).

Every key is optional; other keys go to `sensors.make_sensor` untouched::

    {"model": "model.mpm",    model file on the board
     "sensor": "replay",      replay | rp2_temp | adc | esp32_adc | mpu6050, plus its options
                              ("file": "data.csv" for replay, pins, I2C address, ...)
     "rate_hz": 50,           must equal the model's sample rate (default: the model's; 50
                              when the model file does not state one)
     "smoothing": 1,          1..32: report the majority class of the last N windows
     "mode": "predict",       predict | record | idle at start
     "realtime": true,        false: no sleeping, t= advances by the nominal sample period
     "kernel": null,          null (viper when the port has it) | "portable" | "viper"
     "learn": "last",         off | last | bias | all: what `label` trains (device/train.py)
     "lr_shift": null,        learning rate 2**-lr_shift, 0..30 (null: the model file's, or 7)
     "hidden_shift": null,    layers below the last learn at 2**-(lr_shift + hidden_shift),
                              0..30, in "bias" / "all" (null: the model file's, or 0)
     "batch": null,           mini-batch size >= 1 (null: the model file's, or 1)
     "seed": 1,               seed of the stochastic rounding's random numbers
     "autosave": 0,           save a checkpoint every N training steps (0: only on `save`)
     "checkpoint": "ckpt",    checkpoint slots: <checkpoint>.0 and <checkpoint>.1
     "rehearsal": "model.rh", rehearsal windows (device/rehearsal.py), used when the hidden
                              layers learn ("bias", "all") and the file exists; null: none
     "mount": "+x+y+z"}       the sensor's mount: each sample is turned so before the model
                              sees it, an orientation as device/mount.py names it ("-y+x+z":
                              a quarter turn about z); a checkpoint's mount overrides it

A bad value gets an `err config ...` line and its default (`check_config`). The sensor's own
keys are checked too where they are present (`sensor_checks`: I2C bus, pins and address 0x08..
0x77, the MPU6050's full scales); a bad one is dropped, so that the sensor's default applies.
The host checks the settings it writes with these same rules (`check_value`).
"""

from .commands import hz, shorten, token  # noqa: F401 (the host's tools import them here too)
from .protocol import MODES, PREDICT  # the app modes: words of the line protocol

# "learn": off, then the trainer's modes (device/train_plan.LEARN_MODES, what each trains)
LEARN = ("off", "last", "bias", "all")
MAX_SHIFT = 30  # lr_shift and hidden_shift: 0..MAX_SHIFT (device/train.py)
MAX_SMOOTHING = 32
DEFAULTS = {
    "model": "model.mpm",
    "sensor": "replay",
    "rate_hz": None,
    "smoothing": 1,
    "mode": PREDICT,
    "realtime": True,
    "kernel": None,
    "learn": "last",
    "lr_shift": None,
    "hidden_shift": None,
    "batch": None,
    "seed": 1,
    "autosave": 0,
    "checkpoint": "ckpt",
    "rehearsal": "model.rh",
    "mount": "+x+y+z",  # device/mount.py's name(IDENTITY): no turn
}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_rate(v):
    return v is None or ((_is_int(v) or isinstance(v, float)) and 0 < v <= 1000000)


def _is_name(v):
    return isinstance(v, str) and v != ""


def _is_pin(v):
    return _is_int(v) and v >= 0


def _is_pins(v):
    if not isinstance(v, (list, tuple)) or not v:
        return False
    for p in v:
        if not _is_pin(p):
            return False
    return True


def _is_i2c_addr(v):
    """A 7-bit address outside the reserved ones: 0x08..0x77 (a string "0x69" too)."""
    if isinstance(v, str):
        try:
            v = int(v, 0)
        except ValueError:
            return False
    return _is_int(v) and 0x08 <= v <= 0x77


def _one_of(values):
    return ", ".join([str(v) for v in values[:-1]]) + " or " + str(values[-1])


def _is_shift(v):
    return v is None or (_is_int(v) and 0 <= v <= MAX_SHIFT)


_SHIFTS = "0..%d or null" % MAX_SHIFT


def _is_mount(v):
    """An orientation's name (device/mount.py, imported only for another than the default)."""
    if v == DEFAULTS["mount"]:
        return True
    if not isinstance(v, str):
        return False
    from .mount import index

    return index(v) >= 0


_CHECKS = (
    ("model", _is_name, "a file name"),
    ("sensor", _is_name, "a sensor kind"),
    ("rate_hz", _is_rate, "a rate in Hz, 0 < rate <= 1000000, or null"),
    ("smoothing", lambda v: _is_int(v) and 1 <= v <= MAX_SMOOTHING, "1..%d" % MAX_SMOOTHING),
    ("mode", lambda v: v in MODES, _one_of(MODES)),
    ("realtime", lambda v: isinstance(v, bool), "true or false"),
    ("kernel", lambda v: v in (None, "portable", "viper"), 'null, "portable" or "viper"'),
    ("learn", lambda v: v in LEARN, _one_of(LEARN)),
    ("lr_shift", _is_shift, _SHIFTS),
    ("hidden_shift", _is_shift, _SHIFTS),
    ("batch", lambda v: v is None or (_is_int(v) and v >= 1), "an int >= 1 or null"),
    ("seed", lambda v: _is_int(v) and 0 <= v <= 0xFFFF, "0..65535"),
    ("autosave", lambda v: _is_int(v) and 0 <= v < 0x40000000, "an int >= 0 (0: off)"),
    ("checkpoint", _is_name, "a file name prefix"),
    ("rehearsal", lambda v: v is None or _is_name(v), "a file name or null"),
    ("mount", _is_mount, 'an orientation, "+x+y+z" (none) or e.g. "-y+x+z"'),
)


def sensor_checks(kind):
    """(key, check, expected) of the board.json keys of sensor `kind` (see device/sensors.py)."""
    if kind == "mpu6050":
        from .sensor_mpu6050 import ACCEL_FS_G, GYRO_FS_DPS

        return (
            ("i2c", lambda v: v == "soft" or _is_pin(v), 'an I2C bus id >= 0 or "soft"'),
            ("scl", _is_pin, "a GPIO number >= 0"),
            ("sda", _is_pin, "a GPIO number >= 0"),
            ("addr", _is_i2c_addr, "an I2C address 0x08..0x77"),
            ("accel_fs_g", lambda v: v in ACCEL_FS_G, _one_of(ACCEL_FS_G) + " (g)"),
            ("gyro_fs_dps", lambda v: v in GYRO_FS_DPS, _one_of(GYRO_FS_DPS) + " (deg/s)"),
        )
    if kind == "adc" or kind == "esp32_adc":
        return (("pins", _is_pins, "a list of GPIO numbers >= 0"),)
    return ()


def check_value(key, value, sensor="replay"):
    """None if `value` is good for board.json `key` (`sensor`: the kind whose keys apply, for
    its own keys), else what was expected. Keys without a rule are good."""
    for k, ok, expected in _CHECKS + sensor_checks(sensor):
        if k == key:
            return None if ok(value) else expected
    return None


def check_config(config):
    """board.json dict -> (a copy with defaults filled in, list of problems found)."""
    clean = dict(DEFAULTS)
    if not isinstance(config, dict):
        return clean, ["board.json holds %s, expected a JSON object; using defaults" % config]
    clean.update(config)
    problems = []
    for key, ok, expected in _CHECKS:
        if not ok(clean[key]):
            problems.append(
                "%s %r, expected %s; using %r" % (key, clean[key], expected, DEFAULTS[key])
            )
            clean[key] = DEFAULTS[key]
    for key, ok, expected in sensor_checks(clean["sensor"]):
        if key in clean and not ok(clean[key]):
            problems.append(
                "%s %r, expected %s; using the sensor's default" % (key, clean[key], expected)
            )
            del clean[key]
    return clean, problems
