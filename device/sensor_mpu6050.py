"""MPU6050 family accelerometer + gyroscope over I2C: one burst read per sample, no allocation.

Runs on: board and host (any I2C object with `readfrom_mem_into` / `writeto_mem`; tests pass
a fake). Accepts the MPU6050 (WHO_AM_I 0x68), MPU6886 (0x19) and MPU6500 / MPU9250 family
(0x70, 0x71, 0x73): their registers used here are the same.

    s = MPU6050(machine.I2C(0, scl=machine.Pin(1), sda=machine.Pin(0)), accel_fs_g=8)
    out = array("h", bytes(2 * s.n))
    s.read(out)  # out = ax, ay, az, gx, gy, gz in int16 counts

Counts are the chip's own int16 registers: 32768 counts = the configured full scale
(`accel_fs_g` g for ax..az, `gyro_fs_dps` degrees per second for gx..gz), as in a sensor log's
`full_scale=ax:8g,...,gx:2000dps`.
"""

from array import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_WHO_AM_I = const(0x75)
_PWR_MGMT_1 = const(0x6B)
_SMPLRT_DIV = const(0x19)
_CONFIG = const(0x1A)
_GYRO_CONFIG = const(0x1B)
_ACCEL_CONFIG = const(0x1C)
_ACCEL_XOUT_H = const(0x3B)
_WAKE = const(0x01)  # awake, clock from the X gyro's PLL (the datasheet's recommendation)
_BURST = const(14)  # ax, ay, az, temp, gx, gy, gz: 7 big-endian int16

CHIP_IDS = (0x68, 0x19, 0x70, 0x71, 0x73)  # MPU6050, MPU6886, MPU6500, MPU9250, MPU9255
CHANNELS = ("ax", "ay", "az", "gx", "gy", "gz")
ACCEL_FS_G = (2, 4, 8, 16)  # AFS_SEL 0..3, ACCEL_CONFIG bits 4:3
GYRO_FS_DPS = (250, 500, 1000, 2000)  # FS_SEL 0..3, GYRO_CONFIG bits 4:3
_OFFSET = (0, 2, 4, 8, 10, 12)  # byte offset of each channel in the burst (temp at 6 skipped)


def _choice(name, value, allowed):
    """Index of value in allowed, or ValueError naming both."""
    for i in range(len(allowed)):
        if value == allowed[i]:
            return i
    raise ValueError("mpu6050: %s must be one of %s, found %r" % (name, allowed, value))


class MPU6050:
    """An MPU6050-family IMU on `i2c` at `addr`; channels ax, ay, az, gx, gy, gz (or a subset).

    Checks WHO_AM_I, wakes the chip and writes the full scales (and, when given, the digital
    low-pass filter `dlpf` 0..6 and the sample-rate divider `rate_div` 0..255; left as they are
    otherwise). A bus fault raises OSError; a wrong chip or option raises ValueError.
    """

    def __init__(
        self,
        i2c,
        addr=0x68,
        accel_fs_g=2,
        gyro_fs_dps=250,
        dlpf=None,
        rate_div=None,
        channels=None,
    ):
        afs = _choice("accel_fs_g", accel_fs_g, ACCEL_FS_G)
        gfs = _choice("gyro_fs_dps", gyro_fs_dps, GYRO_FS_DPS)
        if dlpf is not None:
            _choice("dlpf", dlpf, (0, 1, 2, 3, 4, 5, 6))
        if rate_div is not None and not (isinstance(rate_div, int) and 0 <= rate_div <= 255):
            raise ValueError("mpu6050: rate_div must be in 0..255, found %r" % (rate_div,))
        if channels is None:
            channels = CHANNELS
        self.channels = tuple(channels)
        self.n = len(self.channels)
        if self.n < 1:
            raise ValueError("mpu6050: channels must name at least one of %s" % (CHANNELS,))
        self._off = array("B", bytes(self.n))
        for k in range(self.n):
            self._off[k] = _OFFSET[_choice("channel", self.channels[k], CHANNELS)]
        self.accel_fs_g = accel_fs_g
        self.gyro_fs_dps = gyro_fs_dps
        fs = []
        units = []
        for name in self.channels:
            fs.append(accel_fs_g if name[0] == "a" else gyro_fs_dps)
            units.append("g" if name[0] == "a" else "dps")
        self.full_scale = tuple(fs)
        self.units = tuple(units)
        self.i2c = i2c
        self.addr = addr
        self._buf = bytearray(_BURST)
        self._reg = bytearray(1)

        try:
            who = self._read_reg(_WHO_AM_I)
        except OSError as err:
            raise OSError("mpu6050: no answer at 0x%02x (%s)" % (addr, err)) from None
        if who not in CHIP_IDS:
            raise ValueError(
                "mpu6050: WHO_AM_I 0x%02x at 0x%02x, expected one of %s"
                % (who, addr, ", ".join("0x%02x" % c for c in CHIP_IDS))
            )
        self.chip_id = who
        self._write_reg(_PWR_MGMT_1, _WAKE)
        if rate_div is not None:
            self._write_reg(_SMPLRT_DIV, rate_div)
        if dlpf is not None:
            self._write_reg(_CONFIG, dlpf)
        self._write_reg(_GYRO_CONFIG, gfs << 3)
        self._write_reg(_ACCEL_CONFIG, afs << 3)

    def _read_reg(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._reg)
        return self._reg[0]

    def _write_reg(self, reg, value):
        self._reg[0] = value
        self.i2c.writeto_mem(self.addr, reg, self._reg)

    def read(self, out):
        """One 14-byte burst from ACCEL_XOUT_H -> out[0..n-1], big-endian int16 sign-extended.

        Allocates nothing; a bus fault raises OSError.
        """
        b = self._buf
        self.i2c.readfrom_mem_into(self.addr, _ACCEL_XOUT_H, b)
        off = self._off
        for k in range(self.n):
            i = off[k]
            out[k] = (((b[i] << 8) | b[i + 1]) ^ 0x8000) - 0x8000
