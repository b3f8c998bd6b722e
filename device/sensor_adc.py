"""ADC sensors: RP2040 internal temperature, ADC pins (RP2040 and ESP32), ESP32 attenuation.

Runs on: board and host (any ADC object with `read_u16`; tests pass fakes).

- `RP2Temp`: one channel "temp" in centi-degrees Celsius (2712 = 27.12 C), from the RP2040
  datasheet formula T = 27 - (V - 0.706) / 0.001721 with V = raw * 3.3 / 65535, computed
  exactly in integers below 2**30 and rounded to nearest (see `rp2_temp_centi`); full scale
  327.68 C (32768 counts).
- `ADCPins`: one channel per ADC, `read_u16() >> 1`: counts 0..32767 for 0 V .. full scale
  (3.3 V on an RP2040; on an ESP32 it depends on the attenuation). Used for the "adc" and
  "esp32_adc" kinds of `sensors.make_sensor`, which also builds the ADC objects.
"""

# The datasheet formula in micro-volts, with r = read_u16(), D = 1721 * 4369 = 7519049:
#   V_uV = r * 3300000 / 65535 = r * 220000 / 4369
#   T_cC = 2700 + (706000 - V_uV) * 100 / 1721 = 2700 + (308451400000 - r * 22000000) / D
# r * 22000000 needs 41 bits, so r is taken as four 4-bit digits n_k (r = sum n_k * 16**k) and
# 16**k * 22000000 = Q_k * D + R_k is tabulated: then r * 22000000 = Q * D + R with
# Q = sum n_k * Q_k and R = sum n_k * R_k < 2**28, and 308451400000 = 41022 * D + 4971922.
# Every intermediate stays below 2**30 (the boards' small-int limit).
TEMP_D = 7519049
TEMP_QR = ((2, 6961902), (46, 6123746), (749, 232299), (11984, 3716784))


def rp2_temp_centi(raw):
    """RP2040 ADC(4) read_u16 0..65535 -> temperature in centi-degrees C, int16, exact.

    Rounded to nearest (no ties: D is odd); clipped to int16 (only raw < 3008 would pass
    327.67 C, which a working chip cannot read).
    """
    q = 0
    r = 4971922
    for k in range(4):
        d = (raw >> (4 * k)) & 15
        q += d * TEMP_QR[k][0]
        r -= d * TEMP_QR[k][1]
    t = 43722 - q + (2 * r + TEMP_D) // (2 * TEMP_D)
    if t > 32767:
        return 32767
    if t < -32768:
        return -32768
    return t


class RP2Temp:
    """RP2040 internal temperature sensor (`machine.ADC(4)`): channel "temp", centi-degrees C."""

    channels = ("temp",)
    n = 1
    units = ("C",)
    full_scale = (327.68,)

    def __init__(self, adc):
        self.adc = adc

    def read(self, out):
        """One conversion -> out[0] in centi-degrees C. Allocates nothing."""
        out[0] = rp2_temp_centi(self.adc.read_u16())


class ADCPins:
    """ADC channels: out[k] = adcs[k].read_u16() >> 1, counts 0..32767 (32768 = full_scale).

    `adcs`: objects with `read_u16()`; `channels`: their names (default "a0", "a1", ...);
    `full_scale`: the input voltage that 32768 counts stand for; `atten`: the attenuation in
    dB, recorded for reports only (the caller configures the ADCs).
    """

    def __init__(self, adcs, channels=None, full_scale=3.3, atten=None):
        self.adcs = tuple(adcs)
        self.n = len(self.adcs)
        if self.n < 1:
            raise ValueError("adc: expected at least one pin, found none")
        if channels is None:
            channels = ["a%d" % k for k in range(self.n)]
        if len(channels) != self.n:
            raise ValueError("adc: expected %d channel names, found %d" % (self.n, len(channels)))
        self.channels = tuple(channels)
        self.units = ("V",) * self.n
        self.full_scale = (full_scale,) * self.n
        self.atten = atten

    def read(self, out):
        """One conversion per channel -> out[0..n-1] in 0..32767. Allocates nothing."""
        adcs = self.adcs
        for k in range(self.n):
            out[k] = adcs[k].read_u16() >> 1
