"""The sensor's mount: the 24 ways a board can sit with its axes along the model's, and finding
which one from labelled windows.

Runs on: board and host (MicroPython >= 1.22; CPython).

A board mounted turned (in another enclosure, with another axis convention, a quarter turn on
the wrist) reads the same motion in a turned frame. When the turn takes axes to axes the board
undoes it exactly, in counts. `ORIENTATIONS` lists the 24 rotations that do: the signed
permutations of x, y, z with determinant +1, identity first, then the quarter turns about z
(the axis normal to the board), then the turns that flip z, then those that lay it sideways.
Orientation o = (a0, a1, a2) turns the triple v = (v1, v2, v3) into the triple whose axis i is
sign(a_i) * v_|a_i|: (-2, 1, 3) gives (-y, x, z), a quarter turn about z. A negated -32768
saturates to 32767, as the sensor clips. The angular rate turns with the acceleration (a
rotation turns both alike), so every axis triple of `AXES` that the channels hold turns by
the same orientation; other channels stay as they are.

    m = channel_map(channels, k)    # array('b'): per channel, its source channel and sign
    turn(frame, m, out, 0)          # out[0:c] = frame turned by orientation k

A map is one signed byte per channel: source channel + 1, negative when negated. Turning by a
map allocates nothing (the app turns every sample so, device/app.py).

MountSearch scores each orientation on labelled windows: with the window turned so, the model's
score (0..255, the softmax probability of device/infer.py) for the labelled class, summed over
the windows (saturating at SCORE_LIMIT). `best()` is the orientation with the highest sum,
ties to the lower index, so the identity wins unless another beats it. A window costs 24
turned copies, feature sets and predictions (`add` allocates nothing). The host's NumPy
reference is host/mount.py; tests prove the two bit-identical.
"""

from array import array

from .features import N_FEATURES
from .sensor_mpu6050 import CHANNELS

try:  # the search's copy in native code, used with the viper kernel (a few hundred bytes)
    from .mount_viper import turn_window as native_turn_window
except Exception:  # CPython (no `micropython`), or a port without the native emitter
    native_turn_window = None

AXES = (CHANNELS[:3], CHANNELS[3:])  # the axis triples that turn: accelerometer, gyroscope
ORIENTATIONS = (
    (1, 2, 3), (-2, 1, 3), (-1, -2, 3), (2, -1, 3),  # z stays: quarter turns about z
    (1, -2, -3), (2, 1, -3), (-1, 2, -3), (-2, -1, -3),  # z flipped
    (1, 3, -2), (1, -3, 2), (-1, 3, 2), (-1, -3, -2),  # z sideways
    (2, 3, 1), (2, -3, -1), (-2, 3, -1), (-2, -3, 1),
    (3, 1, 2), (3, -1, -2), (-3, 1, -2), (-3, -1, 2),
    (3, 2, -1), (3, -2, 1), (-3, 2, 1), (-3, -2, -1),
)  # fmt: skip
N_ORIENTATIONS = len(ORIENTATIONS)
IDENTITY = 0
# a sum stops growing here (after 2**22 windows of score 255): the sum plus one more score,
# before it is clamped, stays below 2**30, a small int on 32-bit ports
SCORE_LIMIT = (1 << 30) - 256


def name(k):
    """Orientation k as text: each turned axis from the sensor's, "-y+x+z" for (-2, 1, 3)."""
    return "".join(("-" if a < 0 else "+") + "xyz"[abs(a) - 1] for a in ORIENTATIONS[k])


def index(text):
    """The orientation whose name is `text` (as `name` gives it), or -1."""
    for k in range(N_ORIENTATIONS):
        if name(k) == text:
            return k
    return -1


def compose(k, m):
    """The orientation of turning by m, then by k."""
    a, b = ORIENTATIONS[k], ORIENTATIONS[m]
    both = []
    for i in range(3):
        j = b[abs(a[i]) - 1]
        both.append(-j if a[i] < 0 else j)
    return ORIENTATIONS.index(tuple(both))


def triples(channels):
    """Channel indices of each triple of AXES that `channels` holds whole -> list of 3-lists;
    an error when a triple is there in part (a turn needs all three axes)."""
    found = []
    names = list(channels)
    for triple in AXES:
        have = [n in names for n in triple]
        if all(have):
            found.append([names.index(n) for n in triple])
        elif any(have):
            raise ValueError(
                "mount: the channels have %s but not all of %s: a turn needs the three axes"
                % (",".join(n for n in triple if n in names), ",".join(triple))
            )
    return found


def channel_map(channels, k, out=None):
    """array('b') of one entry per channel: source channel + 1, negated where orientation k
    negates it (into `out` when given). An error when `channels` hold no whole triple and k is
    not the identity."""
    c = len(channels)
    m = array("b", bytes(c)) if out is None else out
    for i in range(c):
        m[i] = i + 1
    found = triples(channels)
    if k != IDENTITY and not found:
        raise ValueError(
            "mount: the channels %s hold no axis triple to turn (%s)"
            % (",".join(channels), " or ".join(",".join(t) for t in AXES))
        )
    o = ORIENTATIONS[k]
    for t in found:
        for i in range(3):
            src = t[abs(o[i]) - 1] + 1
            m[t[i]] = -src if o[i] < 0 else src
    return m


def turn(frame, m, out, at):
    """out[at + i] = frame's channel m[i] (negated, saturating, where m[i] < 0), each channel
    i of the map m. frame and out must not share memory."""
    for i in range(len(m)):
        s = m[i]
        if s > 0:
            out[at + i] = frame[s - 1]
        else:
            v = -frame[-s - 1]
            out[at + i] = 32767 if v > 32767 else v


def turn_window(src, dst, m, c, end):
    """dst[0:end] = the frames of src[0:end] (c channels each) turned by the map m, frame for
    frame in the same layout: each channel with one stride and no wrap (device/mount_viper.py
    is the same in native code)."""
    for i in range(c):
        s = m[i]
        d = i  # a while loop: `range` with a step that is not a constant allocates
        if s > 0:
            off = s - 1 - i
            while d < end:
                dst[d] = src[d + off]
                d += c
        else:
            off = -s - 1 - i
            while d < end:
                v = -src[d + off]
                dst[d] = 32767 if v > 32767 else v
                d += c


class MountSearch:
    """Scores of the 24 orientations on labelled windows (see the module doc).

    model: a device.infer.Model (its `predict` and `scores`); window_features: the features
    function the app uses (device/features.py or features_viper); channels: the model's channel
    names; window: frames per window."""

    def __init__(self, model, window_features, channels, window):
        c = len(channels)
        self.model = model
        self.window_features = window_features
        self.n_channels = c
        self.window = window
        self.maps = [channel_map(channels, k) for k in range(N_ORIENTATIONS)]
        self.scores = array("i", bytes(4 * N_ORIENTATIONS))
        self.windows = 0
        self._ring = array("h", bytes(2 * c * window))
        self._turn_window = turn_window
        if model.kernel == "viper" and native_turn_window is not None:
            self._turn_window = native_turn_window
        self._raw = array("i", bytes(4 * N_FEATURES * c))

    def add(self, ring, head, label):
        """Score every orientation on the window of the ring buffer `ring` (window frames,
        oldest at frame `head`, device/features.py's layout) labelled with class index
        `label`. Each turned copy keeps the ring's layout (its oldest frame at `head` too)."""
        c = self.n_channels
        n = self.window
        end = c * n
        turned = self._ring
        scores = self.scores
        got = self.model.scores
        turn_copy = self._turn_window
        for k in range(N_ORIENTATIONS):
            turn_copy(ring, turned, self.maps[k], c, end)
            self.window_features(turned, c, n, head, n, self._raw)
            self.model.predict(self._raw)
            s = scores[k] + got[label]
            scores[k] = SCORE_LIMIT if s > SCORE_LIMIT else s
        self.windows += 1

    def best(self):
        """The orientation with the highest score, ties to the lower index."""
        scores = self.scores
        k = 0
        for j in range(1, N_ORIENTATIONS):
            if scores[j] > scores[k]:
                k = j
        return k

    def clear(self):
        for k in range(N_ORIENTATIONS):
            self.scores[k] = 0
        self.windows = 0
