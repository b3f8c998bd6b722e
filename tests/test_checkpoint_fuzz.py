"""Nothing in a checkpoint file can crash the board: thousands of mutated checkpoints with valid
CRCs load (or are refused with a reason) and a training step follows, under the real
`micropython` binary with the viper kernel and with the portable one.

Runs on: host (pytest), plus the `micropython` binary, one process per sweep.

The host makes, with the board's own code under CPython (device/train.py, portable kernel), a
base checkpoint per trainer setting (model, mode, batch) and an older, different one (the
other slot), then mutates one field at a time: every header field, every array descriptor,
every int and items of every array, each set to 0, -1, +/-1 around its limits, the 31-bit and
32-bit limits and random values, and recomputes the CRC with device/checkpoint.py's own layout.
One MicroPython script loops over the files: load, print what loaded (or the reason the app's
`info checkpoint_ignored=<slot> reason=<...>` line would give), a digest of the trainer's
state, then a step, then back to the base. The host checks each line: an accepted checkpoint
holds exactly what was written and every field in range; a refused one leaves the trainer as
it was (the base), or the other slot's state when there is one; the reason names the field.
"""

import binascii
import random
import struct

import numpy as np
import pytest

from microprop.device import checkpoint, train_plan, train_state
from microprop.device.config import token
from microprop.device.infer import Model
from microprop.device.mount import N_ORIENTATIONS
from microprop.device.train import LEARN_MODES, LIMIT, Trainer
from microprop.host import modelfile

from .conftest import ROOT, run_micropython
from .helpers import configure, mlp_model, records, run_app

SEED = 20240712
LR_SHIFT = 6
# (model, mode, batch): every mode on a two-layer model, batches of 1 and > 1, and a one-layer
# model whose "last" and "all" train the same parameters.
SETTINGS = (
    ("m2", "last", 1),
    ("m2", "bias", 1),
    ("m2", "all", 1),
    ("m2", "all", 4),
    ("m2", "last", 3),
    ("m1", "all", 1),
)
SIZES = {"m2": (6, 8, 4), "m1": (5, 3)}
SMALL_MIN, SMALL_MAX = -(2**30), 2**30 - 1

# Field names of checkpoint.HEAD, in order (offsets come from the format itself).
HEAD_FIELDS = ("magic", "version", "n_arrays", "n_ints", "length", "seq", "model_crc")
HEAD_FIELDS += ("mode", "batch", "mount")
INT_NAMES = ("steps", "n_correct", "state", "count")

SCRIPT = """
import binascii, sys
from device.config import token
from device.infer import Model
from device.train import LEARN_MODES, Trainer
from device import train_state

DIR = sys.argv[1]
KERNEL = sys.argv[2]


def crc_of(arrays):
    c = 0
    for a in arrays:
        c = binascii.crc32(a, c)
    return c & 0xFFFFFFFF


def digest(t):
    arrays, ints = train_state.state(t)
    ws = []
    for layer in t.model.layers:
        ws.append(layer["w"])
    consts = "-"
    if t.model.kernel == "viper":  # the viper forward kernel's row constants, from the weights
        consts = "ok"
        for k in range(len(t.model.layers)):
            layer = t.model.layers[k]
            for j in range(layer["n_out"]):
                total = 0
                for i in range(layer["n_in"]):
                    total += layer["w"][j * layer["n_in"] + i]
                if t.model.consts[k][j] != -(128 + layer["zp_x"]) * total:
                    consts = "bad"
    ints_text = ",".join([str(v) for v in ints])
    return "%08x %s %08x %s" % (crc_of(arrays), ints_text, crc_of(ws), consts)


def in_range(t):
    # the state after a step: every field within what `check` allows
    arrays, ints = train_state.state(t)
    limits = train_state.check(t, ints, LEARN_MODES.index(t.mode), t.batch)
    if isinstance(limits, str):
        return token(limits)
    for k in range(len(arrays)):
        lim = limits[k]
        if lim is not None:
            for v in arrays[k]:
                if v < -lim or v > lim:
                    return "array_%d" % k
    return "ok"


def run(setting, model_path, mode, batch, lr_shift, label, raw, names):
    model = Model(model_path, kernel=KERNEL)
    t = Trainer(model, mode, lr_shift, batch, kernel=KERNEL, model_path=model_path)
    base = DIR + "/" + setting + "-base"
    seq, ignored = t.load(base)
    if seq is None or ignored:
        raise RuntimeError("base of %s: %r" % (setting, ignored))
    print("base", setting, t.kernel, digest(t))
    for name in names:
        prefix = DIR + "/" + name
        try:
            seq, ignored = t.load(prefix)
        except Exception as e:
            print(name, "load-exception", type(e).__name__, token(str(e)))
            t.load(base)
            continue
        why = []
        for path, reason in ignored:
            why.append(token(path[len(prefix) :]) + ":" + token(reason))
        got = digest(t)
        try:
            t.step(raw, label)
            after = "step-ok " + in_range(t)
        except Exception as e:
            after = "step-exception %s %s" % (type(e).__name__, token(str(e)))
        print(name, seq, " ".join(why) or "-", got, after)
        if t.load(base)[0] is None:
            raise RuntimeError("base of %s did not load again" % setting)


with open(DIR + "/manifest.txt") as f:
    lines = f.read().split("\\n")
for line in lines:
    if line:
        parts = line.split(" ")
        raw = [int(v) for v in parts[6].split(",")]
        run(parts[0], parts[1], parts[2], int(parts[3]), int(parts[4]), int(parts[5]), raw,
            parts[7:])
print("done")
"""


def head_offsets():
    """{field: (offset, struct code)} of checkpoint.HEAD."""
    fmt = checkpoint.HEAD
    codes = []
    i = 1
    while i < len(fmt):
        j = i
        while fmt[j].isdigit():
            j += 1
        codes.append(fmt[i : j + 1])
        i = j + 1
    assert len(codes) == len(HEAD_FIELDS)
    out = {}
    for name, code in zip(HEAD_FIELDS, codes, strict=True):
        out[name] = (struct.calcsize("<" + "".join(codes[: len(out)])), "<" + code)
    assert struct.calcsize(fmt) == checkpoint.HEAD_SIZE
    return out


def refit(data):
    """`data` with its CRC32 recomputed, as device/checkpoint.py writes it."""
    body = bytes(data[:-4])
    return body + struct.pack("<I", binascii.crc32(body) & 0xFFFFFFFF)


class Layout:
    """Where each field of a checkpoint of Trainer `t` lies, and the trainer's limits."""

    def __init__(self, t):
        arrays, ints = train_state.state(t)
        self.shape = [(checkpoint.typecode(a), len(a)) for a in arrays]
        self.n_ints = len(ints)
        self.n_head, self.length = checkpoint.sizes(self.shape, self.n_ints)
        self.desc_at = checkpoint.HEAD_SIZE
        self.ints_at = self.n_head - 4 * self.n_ints
        self.array_at = []
        pos = self.n_head
        for tc, n in self.shape:
            self.array_at.append(pos)
            pos += n * checkpoint.ITEMSIZE[tc]
        self.kinds = []  # per array: ("w", k), ("b", k), ("gw", k) or ("gb", k)
        lowest = len(t.model.layers) - len(t.layers)  # t.layers: from the lowest that learns
        for k, layer in enumerate(t.layers, lowest):
            if layer.trains_w:
                self.kinds.append(("w", k))
            self.kinds.append(("b", k))  # a Layer's biases always learn
        for k, layer in enumerate(t.layers, lowest):
            if layer.gw is not None:
                self.kinds.append(("gw", k))
            if layer.gb is not None:
                self.kinds.append(("gb", k))

    def parse(self, data):
        """(header dict, ints, [numpy arrays]) of checkpoint bytes of this layout."""
        head = dict(zip(HEAD_FIELDS, struct.unpack_from(checkpoint.HEAD, data, 0), strict=True))
        ints = list(struct.unpack_from("<%di" % self.n_ints, data, self.ints_at))
        arrays = []
        for (tc, n), at in zip(self.shape, self.array_at, strict=True):
            arrays.append(np.frombuffer(data, dtype=np.dtype(tc).newbyteorder("<"), count=n,
                                        offset=at).astype(np.int64))  # fmt: skip
        return head, ints, arrays


def expected_reason(t, lay, base, data):
    """The reason (its start) why the board must refuse checkpoint bytes `data` (one field
    mutated from `base`), or None when it must load it: the ranges of device/train_state.py."""
    if data[:4] != checkpoint.MAGIC:
        return "bad magic"
    head, ints, arrays = lay.parse(data)
    if not checkpoint.OLDEST <= head["version"] <= checkpoint.VERSION:
        return "version %d, expected %d or %d" % (
            head["version"],
            checkpoint.OLDEST,
            checkpoint.VERSION,
        )
    if head["version"] != checkpoint.VERSION:  # read as version 2: the mount as a descriptor
        return "different shape: array 0"
    if head["length"] != len(data):
        return "truncated" if head["length"] > len(data) else "size"
    base_head = lay.parse(base)[0]
    if head["model_crc"] != base_head["model_crc"]:
        return "belongs to another model"
    if head["n_arrays"] != len(lay.shape) or head["n_ints"] != lay.n_ints:
        return "different shape"
    for k, (tc, n) in enumerate(lay.shape):
        at = lay.desc_at + checkpoint.DESC_SIZE * k
        got = struct.unpack_from(checkpoint.DESC, data, at)
        if got != (ord(tc), n):
            return "different shape: array %d" % k
    for k, v in enumerate(ints):
        if not SMALL_MIN <= v <= SMALL_MAX:
            return "int %d outside the 31-bit range" % k
    mode, batch = head["mode"], head["batch"]
    if head["mount"] >= N_ORIENTATIONS:
        return "mount %d, expected 0..%d" % (head["mount"], N_ORIENTATIONS - 1)
    if mode >= len(LEARN_MODES):
        return "mode id"
    if _learns(LEARN_MODES[mode], len(t.model.layers)) != (t.trains_w, t.trains_b):
        return "mode %s" % LEARN_MODES[mode]
    if not 1 <= batch <= t.max_batch or (batch > 1) != (t.batch > 1):
        return "batch %d" % batch
    steps, n_correct, st, count = ints
    if not 0 <= steps <= LIMIT:
        return "steps"
    if not 0 <= n_correct <= steps:
        return "correct answers"
    if not 1 <= st <= 0xFFFF:
        return "prng state"
    if not 0 <= count < min(batch, t.batch):
        return "samples in the batch"
    for k, ((kind, layer), a) in enumerate(zip(lay.kinds, arrays, strict=True)):
        lim = _limit(t, kind, layer, count)
        if lim is None:
            continue
        for i, v in enumerate(a):
            if not SMALL_MIN <= v <= SMALL_MAX:
                return "array %d item %d outside the 31-bit range" % (k, i)
            if not -lim <= v <= lim:
                return "array %d item %d is %d, expected -%d..%d" % (k, i, v, lim, lim)
    return None


def _limit(t, kind, k, count):
    """The largest |item| of a checkpoint array of `kind` of model layer k of Trainer `t`
    (None: any int16 master weight), with `count` samples in the batch: its plan's limits."""
    p = train_plan.plan(t.model.layers, t.mode, t.lr_shift, t.hidden_shift)[k]
    return {
        "w": None,
        "b": p["bias_limit"],
        "gw": count * p["delta_max"] * p["dmax"],
        "gb": count * p["delta_max"],
    }[kind]


def _learns(mode, n):
    w, b, _ = train_plan.learns(mode, n)
    return w, b


def values_around(limit, rng, lo=None, hi=None):
    """0, +/-1, +/-1 around +/-limit, the 31- and 32-bit limits and random values, kept to
    [lo, hi] (a field's own range) when given."""
    vals = {0, 1, -1, limit - 1, limit, limit + 1, -limit + 1, -limit, -limit - 1}
    vals |= {SMALL_MAX, SMALL_MAX + 1, SMALL_MIN, SMALL_MIN - 1, 2**31 - 1, -(2**31)}
    vals |= {rng.randint(-(2**31), 2**31 - 1), rng.randint(-limit - 5, limit + 5)}
    if lo is not None:
        vals = {lo + (v - lo) % (hi - lo + 1) for v in vals}
    return sorted(vals)


def mutations(t, lay, base, rng):
    """(name, bytes) of checkpoints with one field of `base` changed and the CRC refitted."""
    out = []
    offs = head_offsets()

    def put(name, at, code, v):
        data = bytearray(base)
        struct.pack_into(code, data, at, v)
        out.append((name, refit(data)))

    for name, (at, code) in offs.items():
        if name == "magic":
            for v in (b"MPCL", b"\0\0\0\0", b"MPRP"):
                put("magic", at, code, v)
            continue
        bits = 8 * struct.calcsize(code)
        top = 2**bits - 1
        limit = {"mode": len(LEARN_MODES), "batch": t.max_batch, "version": checkpoint.VERSION}
        limit["mount"] = N_ORIENTATIONS
        limit.update({"length": lay.length, "n_arrays": len(lay.shape), "n_ints": lay.n_ints})
        limit.update({"seq": 1, "model_crc": struct.unpack_from("<I", base, at)[0]})
        for v in values_around(limit[name], rng, 0, top):
            put("%s=%d" % (name, v), at, code, v)
        if name == "batch":
            for v in range(1, 6):
                put("batch=%d" % v, at, code, v)
    for k, (_, n) in enumerate(lay.shape):
        at = lay.desc_at + checkpoint.DESC_SIZE * k
        for v in sorted({ord(c) for c in "bBhHiIfx\0"}):
            put("desc%d.tc=%d" % (k, v), at, "<B", v)
        for v in values_around(n, rng, 0, 2**32 - 1):
            put("desc%d.n=%d" % (k, v), at + 1, "<I", v)
    head, ints, _ = lay.parse(base)
    limits = {
        "steps": LIMIT,
        "n_correct": ints[0],
        "state": 0xFFFF,
        "count": max(t.batch, head["batch"]),
    }
    for k, name in enumerate(INT_NAMES):
        for v in values_around(limits[name], rng, -(2**31), 2**31 - 1):
            put("%s=%d" % (name, v), lay.ints_at + 4 * k, "<i", v)
    count = ints[3]
    for k, ((kind, layer), (tc, n)) in enumerate(zip(lay.kinds, lay.shape, strict=True)):
        lim = _limit(t, kind, layer, count) or 32767
        size = checkpoint.ITEMSIZE[tc]
        span = 2 ** (8 * size)
        lo = -(span // 2) if tc.islower() else 0
        for i in sorted({0, n - 1, rng.randrange(n)}):
            for v in values_around(lim, rng, lo, lo + span - 1):
                put("a%d[%d]=%d" % (k, i, v), lay.array_at[k] + size * i, "<" + tc, v)
    return out


def make_setting(tmp_path, rng, name, model_key, mode, batch, models):
    """Base and other checkpoints of one setting; -> (manifest line, trainer, layout, base,
    other, cases [(case name, bytes, with the other slot)])."""
    path, raw, labels = models[model_key]
    model = Model(str(path), kernel="portable")
    t = Trainer(model, mode, LR_SHIFT, batch, kernel="portable", model_path=str(path))
    n_steps = 7 if batch == 1 else 2 * batch + batch - 1  # mid-batch: gradient sums in it
    for s in range(n_steps):
        t.step(raw[s], int(labels[s]))
    prefix = tmp_path / ("%s-base" % name)
    t.save(str(prefix))
    base = (tmp_path / ("%s-base.0" % name)).read_bytes()
    for s in range(n_steps, n_steps + 3):  # another state, for the other slot (seq 0: older)
        t.step(raw[s], int(labels[s]))
    t.save(str(tmp_path / ("%s-other" % name)))
    data = bytearray((tmp_path / ("%s-other.0" % name)).read_bytes())
    struct.pack_into("<I", data, head_offsets()["seq"][0], 0)
    other = refit(data)
    lay = Layout(t)
    cases = []
    for k, (what, data) in enumerate(mutations(t, lay, base, rng)):
        case = "%s-%04d" % (name, k)
        with_other = k % 3 == 0
        (tmp_path / (case + ".0")).write_bytes(data)
        if with_other:
            (tmp_path / (case + ".1")).write_bytes(other)
        cases.append((case, what, data, with_other))
    line = " ".join(
        [name, str(path), mode, str(batch), str(LR_SHIFT), str(int(labels[0]))]
        + [",".join(str(int(v)) for v in raw[0])]
        + [c[0] for c in cases]
    )
    return line, t, lay, base, other, cases


def expected_digest(t, lay, data):
    """The `digest` the script prints for a trainer holding checkpoint bytes `data`."""
    head, ints, arrays = lay.parse(data)
    c = 0
    for (tc, n), at in zip(lay.shape, lay.array_at, strict=True):
        c = binascii.crc32(data[at : at + n * checkpoint.ITEMSIZE[tc]], c)
    ws = []
    masters = {layer: a for (kind, layer), a in zip(lay.kinds, arrays, strict=True) if kind == "w"}
    for k, layer in enumerate(t.model.layers):
        if k in masters:
            w = np.clip((masters[k] + 128) >> 8, -127, 127)
        else:
            w = np.asarray(list(layer["w"]), dtype=np.int64)
        ws.append(w.astype(np.int8).tobytes())
    return "%08x %s %08x" % (
        c & 0xFFFFFFFF,
        ",".join(str(v) for v in ints),
        binascii.crc32(b"".join(ws)) & 0xFFFFFFFF,
    )


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    """The folder of mutated checkpoints and, per case, what the board must print."""
    d = tmp_path_factory.mktemp("fuzz")
    rng = random.Random(SEED)
    nrng = np.random.default_rng(SEED)
    models = {}
    for key, sizes in SIZES.items():
        q, raw, labels = mlp_model(nrng, sizes, "relu", n=40)
        path = d / ("%s.mpm" % key)
        modelfile.write_model(path, q)
        models[key] = (path, raw, labels)
    lines, expected = [], {}
    for setting in SETTINGS:
        name = "%s-%s-%d" % setting
        line, t, lay, base, other, cases = make_setting(d, rng, name, *setting, models)
        lines.append(line)
        for case, what, data, with_other in cases:
            why = expected_reason(t, lay, base, data)
            if why is None:
                want = ("load", expected_digest(t, lay, data))
            elif with_other:
                want = ("other", expected_digest(t, lay, other))
            else:
                want = ("none", expected_digest(t, lay, base))
            expected[case] = (name, what, why, want)
    (d / "manifest.txt").write_text("\n".join(lines) + "\n")
    return d, expected


def sweep(micropython, fuzz, kernel):
    d, expected = fuzz
    out = run_micropython(micropython, SCRIPT, [str(d), kernel], cwd=ROOT, timeout=120)
    lines = out.splitlines()
    assert lines[-1] == "done", lines[-3:]
    bases = [ln for ln in lines if ln.startswith("base ")]
    assert len(bases) == len(SETTINGS) and all(ln.split()[2] == kernel for ln in bases)
    seen = 0
    refused = 0
    for line in lines:
        if line.startswith("base ") or line == "done":
            continue
        parts = line.split()
        case, seq, why = parts[:3]
        name, what, reason, (outcome, want) = expected[case]
        where = "%s (%s, %s kernel): %s" % (case, what, kernel, line)
        assert seq != "load-exception", where
        assert parts[7:] == ["step-ok", "ok"], where
        got_digest = " ".join(parts[3:6])
        consts = parts[6]
        assert consts in ("ok", "-") and (consts == "ok") == (kernel == "viper"), where
        assert got_digest == want, where
        if reason is None:
            assert seq != "None" and why == "-", where
        else:
            refused += 1
            assert why.startswith(".0:" + token(reason)), (reason, where)
            assert (seq == "None") == (outcome == "none"), where
        seen += 1
    assert seen == len(expected)
    return seen, refused


def test_mutated_checkpoints_never_crash_viper(micropython, fuzz):
    seen, refused = sweep(micropython, fuzz, "viper")
    assert seen >= 2000 and 0.3 * seen < refused < seen, (seen, refused)


def test_mutated_checkpoints_never_crash_portable(micropython, fuzz):
    seen, refused = sweep(micropython, fuzz, "portable")
    assert seen >= 2000 and 0.3 * seen < refused < seen, (seen, refused)


def test_the_app_reports_a_refused_slot_and_loads_the_other(micropython, folder):
    """A newer slot with an out-of-range field (valid CRC) and one of the old format version:
    the app's start says `info checkpoint_ignored=<slot> reason=<...>` and loads the other."""
    configure(folder)
    path = str(folder / "model.mpm")
    t = Trainer(Model(path, kernel="portable"), "last", 4, model_path=path)
    t.prefix = str(folder / "ckpt")
    raw = [int(v) for v in np.random.default_rng(1).integers(-500, 500, t.model.n_inputs)]
    for s in range(3):
        t.step(raw, s % t.model.n_outputs)
    assert t.save() == (str(folder / "ckpt.0"), 1)
    older = (folder / "ckpt.0").read_bytes()
    t.step(raw, 0)
    assert t.save() == (str(folder / "ckpt.1"), 2)
    newer = (folder / "ckpt.1").read_bytes()
    lay = Layout(t)
    for at, value, reason in (
        (lay.ints_at, -1, "steps_-1,_expected_0..1073741823"),
        (lay.ints_at + 8, 0, "prng_state_0,_expected_1..65535"),
        (lay.ints_at + 12, -1, "samples_in_the_batch_-1,_expected_0..0"),
        (head_offsets()["version"][0], 1, "version_1,_expected_2_or_3"),
    ):
        data = bytearray(newer)
        code = "<H" if at == head_offsets()["version"][0] else "<i"
        struct.pack_into(code, data, at, value)
        (folder / "ckpt.1").write_bytes(refit(data))
        recs, dumps = records(run_app(micropython, folder, [(0, "dump")], 1))
        assert recs[0].fields["checkpoint"] == "ckpt.0" and recs[0].fields["steps"] == "3"
        assert recs[1].fields == {"checkpoint": "ckpt.0", "seq": "1", "steps": "3"}
        assert recs[2].fields == {"checkpoint_ignored": "ckpt.1", "reason": reason}
        _, ints, arrays = lay.parse(older)
        assert [dumps[0][k] for k in ("steps", "n_correct", "state")] == ints[:3]
        n = len(t.model.layers) - 1
        assert dumps[0]["m%d" % n] == list(arrays[0]) and dumps[0]["b%d" % n] == list(arrays[1])
