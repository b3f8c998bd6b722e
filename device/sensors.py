"""Sensors behind one small interface, and `make_sensor`, which builds one from board.json.

Runs on: board and host (the replay sensor anywhere; hardware sensors on a board, or on the
host with fake `machine` objects, as the tests do).

Every sensor object has:
    channels     tuple of channel names, e.g. ("ax", "ay", "az", "gx", "gy", "gz")
    n            the number of channels
    units        tuple of unit names per channel ("g", "dps", "C", "V"; "" when unknown)
    full_scale   tuple per channel: the physical value that 32768 counts stand for (0: unknown)
    read(out)    one sample of int16 counts into out[0..n-1] (an array('h') or a list);
                 returns None, allocates nothing in steady state, raises OSError on a fault

`check_model(sensor, model["sensor"])` tells whether a model file was made for this sensor.

board.json keys (other keys belong to the app and are ignored here):

    "sensor"        one of "replay", "rp2_temp", "adc", "esp32_adc", "mpu6050" (required)

  replay (a sensor log replayed from the board's filesystem, looping; see sensor_replay.py):
    "file"          path of the CSV file, default "data.csv" (REPLAY_FILE)
    "channels"      list of column names, default every numeric column except label,
                    subject, recording and t_ms
    "line_max"      longest row in bytes, default 256 (longer rows count as bad rows)

  rp2_temp (RP2040 internal temperature sensor, machine.ADC(4)): no options; channel "temp"
    in centi-degrees C.

  adc (ADC pins, RP2040 or ESP32: read_u16() >> 1, counts 0..32767; the port's default
  attenuation, which on an ESP32 is 0 dB, about 1 V: use esp32_adc there for 0..3.3 V):
    "pins"          list of GPIO numbers, e.g. [26, 27] (required)
    "channels"      list of channel names, default "a0", "a1", ...
    "full_scale"    volts that 32768 counts stand for, default 3.3

  esp32_adc (ESP32 ADC pins with attenuation; counts as "adc"):
    "pins", "channels", "full_scale" as "adc" (full scale: the attenuation's top voltage,
                    default 3.3; the ESP32 ADC is not linear near the top)
    "atten"         attenuation in dB: 0, 2.5, 6 or 11 (ADC.ATTN_11DB), default 11; when the
                    port lacks the default's constant the ADC keeps its own setting

  mpu6050 (MPU6050 / MPU6886 / MPU6500 / MPU9250 over I2C; see sensor_mpu6050.py):
    "i2c"           hardware I2C bus id (0 or 1), or "soft" for machine.SoftI2C; default 0
    "scl", "sda"    GPIO numbers of the bus pins (required for "soft"; the port's default
                    pins of the bus when both are absent)
    "freq"          bus clock in Hz, default 400000
    "addr"          7-bit address, default 104 (0x68; 0x69 with AD0 high); "0x69" also works
    "accel_fs_g"    accelerometer full scale 2, 4, 8 or 16 (g), default 2
    "gyro_fs_dps"   gyroscope full scale 250, 500, 1000 or 2000 (deg/s), default 250
    "dlpf"          digital low-pass filter setting 0..6 (CONFIG), default: left as is
    "rate_div"      sample-rate divider 0..255 (SMPLRT_DIV), default: left as is
    "channels"      subset of ["ax", "ay", "az", "gx", "gy", "gz"], default all six
"""

try:
    import machine
except ImportError:  # CPython
    machine = None

KINDS = ("replay", "rp2_temp", "adc", "esp32_adc", "mpu6050")
REPLAY_FILE = "data.csv"  # the replay sensor's "file" when board.json names none
_ATTN = ((0, "ATTN_0DB"), (2.5, "ATTN_2_5DB"), (6, "ATTN_6DB"), (11, "ATTN_11DB"))


def import_driver(kind):
    """Import the module of sensor `kind` now (device/board.py imports the app's code before
    it makes any buffer); make_sensor imports it anyway."""
    if kind == "replay":
        from . import sensor_replay  # noqa: F401
    elif kind in ("rp2_temp", "adc", "esp32_adc"):
        from . import sensor_adc  # noqa: F401
    elif kind == "mpu6050":
        from . import sensor_mpu6050  # noqa: F401


def make_sensor(config):
    """board.json dict -> a sensor object (see the module docstring for the keys)."""
    kind = config.get("sensor")
    if kind == "replay":
        from .sensor_replay import Replay

        return Replay(
            config.get("file", REPLAY_FILE), config.get("channels"), config.get("line_max", 256)
        )
    if kind == "rp2_temp":
        from .sensor_adc import RP2Temp

        _need("ADC", kind)
        return RP2Temp(machine.ADC(4))
    if kind == "adc" or kind == "esp32_adc":
        return _make_adc(kind, config)
    if kind == "mpu6050":
        return _make_mpu6050(config)
    raise ValueError("sensors: sensor must be one of %s, found %r" % (", ".join(KINDS), kind))


def _need(name, kind):
    if getattr(machine, name, None) is None:
        raise ValueError("sensors: %r needs machine.%s, which this port lacks" % (kind, name))


def _make_adc(kind, config):
    from .sensor_adc import ADCPins

    pins = config.get("pins")
    if not isinstance(pins, (list, tuple)) or not pins:
        raise ValueError(
            'sensors: %s needs "pins", a list of GPIO numbers, found %r' % (kind, pins)
        )
    _need("ADC", kind)
    atten = None
    code = None
    if kind == "esp32_adc":
        atten = config.get("atten", 11)
        name = None
        for db, attr in _ATTN:
            if atten == db:
                name = attr
        if name is None:
            raise ValueError(
                "sensors: atten must be one of 0, 2.5, 6, 11 (dB), found %r" % (atten,)
            )
        code = getattr(machine.ADC, name, None)
        if code is None:
            if "atten" in config:
                raise ValueError("sensors: this port has no machine.ADC.%s" % name)
            atten = None
    adcs = []
    for p in pins:
        adc = machine.ADC(machine.Pin(p))
        if code is not None:
            adc.atten(code)
        adcs.append(adc)
    return ADCPins(adcs, config.get("channels"), config.get("full_scale", 3.3), atten)


def _make_mpu6050(config):
    from .sensor_mpu6050 import MPU6050

    bus = config.get("i2c", 0)
    scl = config.get("scl")
    sda = config.get("sda")
    freq = config.get("freq", 400000)
    if (scl is None) != (sda is None):
        raise ValueError('sensors: mpu6050 needs both "scl" and "sda", or neither')
    if bus == "soft":
        _need("SoftI2C", "mpu6050")
        if scl is None:
            raise ValueError('sensors: mpu6050 on i2c "soft" needs "scl" and "sda"')
        i2c = machine.SoftI2C(scl=machine.Pin(scl), sda=machine.Pin(sda), freq=freq)
    else:
        _need("I2C", "mpu6050")
        if scl is None:
            i2c = machine.I2C(bus, freq=freq)
        else:
            i2c = machine.I2C(bus, scl=machine.Pin(scl), sda=machine.Pin(sda), freq=freq)
    addr = config.get("addr", 0x68)
    if isinstance(addr, str):
        addr = int(addr, 0)
    return MPU6050(
        i2c,
        addr,
        config.get("accel_fs_g", 2),
        config.get("gyro_fs_dps", 250),
        config.get("dlpf"),
        config.get("rate_div"),
        config.get("channels"),
    )


def check_model(sensor, desc):
    """Raise ValueError unless `sensor` gives the channels, units and full scales of `desc`.

    `desc` is a model file's sensor description (modelfile: "channels", "units",
    "full_scale"); a unit or full scale that either side leaves empty or 0 is not compared.
    """
    names = tuple(desc["channels"])
    if sensor.channels != names:
        raise ValueError("sensor: channels %s, the model expects %s" % (sensor.channels, names))
    units = desc.get("units") or ()
    scales = desc.get("full_scale") or ()
    for k in range(sensor.n):
        u = sensor.units[k]
        mu = units[k] if k < len(units) else ""
        fs = sensor.full_scale[k]
        mfs = scales[k] if k < len(scales) else 0
        if (u and mu and u != mu) or (fs and mfs and abs(fs - mfs) > 1e-4 * abs(mfs)):
            raise ValueError(
                "sensor: %s full scale %g%s, the model expects %g%s" % (names[k], fs, u, mfs, mu)
            )
