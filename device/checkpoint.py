"""Training checkpoints in two slots on the board's filesystem, safe against a power cut.

Runs on: board and host (MicroPython >= 1.22 and CPython; imports only os, struct, binascii).

The module knows nothing of the trainer: the caller's state is a list of arrays (typecodes
'b', 'B', 'h', 'H', 'i', 'I'), a short list of ints (steps, counters, PRNG state, ...) and three
numbers saying how it was made (the learning mode's id, the batch size and the sensor's mount,
device/mount.py's orientation index, in which the weights learned), which the header holds so
that a reader (`microprop pull`) knows them before it loads anything.

    crc = model_crc_of("model.mpm")
    seq = save("ckpt", crc, [master_w, b, w], [steps, n_correct, prng_state], mode, batch, mount)
    seq, ignored = load("ckpt", crc, [master_w, b, w], ints)   # seq None: nothing loaded
    seq, ignored = load("ckpt", crc, arrays, ints, check, head)  # values checked; head: a dict
                                                                 # of the loaded slot's header
    for path, reason in ignored:
        print("info checkpoint=%s ignored=%s" % (path, reason))
    head, reason = inspect("ckpt.0")   # {"seq", "model_crc", "mode", "batch", "mount", ...}
    clear("ckpt")                                                 # reset-model

Two slots, `<prefix>.0` and `<prefix>.1`. `save` writes the slot that does NOT hold the newest
valid checkpoint of this model, with the next sequence number, then flushes and syncs; until
its last byte (the CRC) is on the filesystem that slot is invalid, so a power cut at any byte
of a write leaves the previous checkpoint to `load`. `load` takes the newest slot that is
intact (magic, version, size, CRC) and belongs to this model (model CRC) and this state
(the same arrays and the same number of ints) and, given a `check`, whose values pass it;
every other slot that exists comes back in `ignored` with a reason.

`check(ints, mode, batch, mount)`, the caller's, sees a slot's ints and header before anything
of it is used, and returns a reason (str) to refuse the slot, or one limit per array: None (any
value of its typecode) or L in 0..2**30 - 1, every item of the array in [-L, L]. With a check,
`load` also refuses a slot whose ints or limited items lie outside the 31-bit small-int range
[-2**30, 2**30 - 1] (without making those numbers, which would be big ints on a board): the
check sees small ints only. The values are checked in the file, before `load` reads any of them
into the caller's state: a refused slot leaves that state exactly as it was.

Slot file, little-endian (the arrays in native byte order: little-endian on every board and
supported host):

| offset    | field            | type                                          |
|-----------|------------------|-----------------------------------------------|
| 0         | magic            | 4 bytes b'MPCK'                               |
| 4         | version          | u16, 3 (2 had no mount, 1 no mode and batch)  |
| 6         | n_arrays, n_ints | u8, u8                                        |
| 8         | length           | u32, the file size, CRC included              |
| 12        | seq              | u32, 1 for the first save, then +1 each save  |
| 16        | model_crc        | u32, the CRC32 at the end of the model file   |
| 20        | mode             | u8, the learning mode's id (the caller's)     |
| 21        | batch            | u32, the batch size (the caller's), >= 1      |
| 25        | mount            | u8, the sensor's mount (the caller's), 0..255 |
| 26        | per array        | u8 typecode (ASCII), u32 item count           |
|           | per int          | i32                                           |
|           | array data       | each array's bytes, in order                  |
| length-4  | crc32            | u32, binascii.crc32 of every byte before it   |

`save` checks both slots first (it reads them, as `load` does) to pick the slot and the
sequence number. Ints are stored as i32, sequence numbers and model CRCs as u32. A slot of
version 2 (the same but for the mount: its header ends at 25) loads as mount 0, the identity,
which every board before the mount ran; a slot of another version is ignored with the reason
`version 1, expected 2 or 3`. `save` writes version 3.

Memory: save and load allocate a 256-byte buffer and a few small objects, never anything the
size of the state. `load` first streams the whole slot through that buffer to check its CRC
(and, given a check, streams the limited arrays once more to check their items), and only
then reads the array bytes straight into the caller's arrays (`readinto`), checking that the
CRC is still the one it checked: a corrupt or refused slot never touches the live weights.
"""

import binascii
import os
import struct

MAGIC = b"MPCK"
VERSION = 3
OLDEST = 2  # the oldest version `load` reads: version 2, whose header has no mount
ITEMSIZE = {"b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4}
MAX_ITEMS = 255  # arrays, and ints, per checkpoint (u8 counts)
HEAD = "<4sHBBIIIBIB"  # magic, version, n_arrays, n_ints, length, seq, model_crc, mode, batch,
HEAD_SIZE = 26  # mount
HEAD_2 = HEAD[:-1]  # version 2's header: no mount
HEAD_2_SIZE = 25
_SMALL = 0x3FFFFFFF  # the largest small int of a 32-bit port: 2**30 - 1
DESC = "<BI"  # typecode, item count
DESC_SIZE = 5
_CRC_SIZE = 4
_CHUNK = 256  # bytes per read while checking a slot's CRC


def slot_paths(prefix="ckpt"):
    """The two slot files of `prefix`."""
    return (prefix + ".0", prefix + ".1")


def model_crc_of(path):
    """The CRC32 stored in the last 4 bytes of the model file at `path` (u32).

    The model file's loader checks that CRC; a checkpoint records it to name its model."""
    with open(path, "rb") as f:
        n = f.seek(0, 2)
        if n < _CRC_SIZE:
            raise ValueError("checkpoint: model file %s has %d bytes, expected >= 4" % (path, n))
        f.seek(n - _CRC_SIZE)
        return struct.unpack("<I", f.read(_CRC_SIZE))[0]


def typecode(a):
    """The typecode of array `a`; MicroPython's arrays have no .typecode, their repr names it."""
    try:
        tc = a.typecode
    except AttributeError:
        r = repr(a[:0])  # "array('h')": a constant-size allocation
        tc = r[7] if r[:7] == "array('" else "?"
    if tc not in ITEMSIZE:
        raise ValueError("checkpoint: array typecode %r, expected one of bBhHiI" % (tc,))
    return tc


def _shape(arrays):
    """[(typecode, item count), ...] of the caller's arrays."""
    if len(arrays) > MAX_ITEMS:
        raise ValueError("checkpoint: %d arrays, expected <= %d" % (len(arrays), MAX_ITEMS))
    shape = []
    for a in arrays:
        shape.append((typecode(a), len(a)))
    return shape


def sizes(shape, n_ints, version=VERSION):
    """(header bytes, file bytes) of a checkpoint of this shape ([(typecode, item count), ...],
    as the arrays' descriptors say) with n_ints ints, in format `version`."""
    head = _head_size(version) + DESC_SIZE * len(shape) + 4 * n_ints
    total = head
    for tc, n in shape:
        total += n * ITEMSIZE[tc]
    return head, total + _CRC_SIZE


def _head_size(version):
    return HEAD_2_SIZE if version == 2 else HEAD_SIZE


def _sync(f):
    """Flush `f` to the filesystem: fsync where there is one (CPython); -> True if done."""
    f.flush()
    fsync = getattr(os, "fsync", None)
    if fsync is None:
        return False
    fsync(f.fileno())
    return True


def _sync_all():
    """os.sync() where there is one (the boards' ports have it; the Unix port has not)."""
    sync = getattr(os, "sync", None)
    if sync is not None:
        sync()


def _put(f, data, n):
    k = f.write(data)
    if k is not None and k != n:
        raise OSError("checkpoint: wrote %d of %d bytes" % (k, n))


def _write(path, seq, model_crc, shape, arrays, ints, mode, batch, mount):
    n_head, length = sizes(shape, len(ints))
    head = struct.pack(
        HEAD, MAGIC, VERSION, len(shape), len(ints), length, seq, model_crc, mode, batch, mount
    )
    with open(path, "wb") as f:
        crc = binascii.crc32(head)
        _put(f, head, HEAD_SIZE)
        for tc, n in shape:
            d = struct.pack(DESC, ord(tc), n)
            crc = binascii.crc32(d, crc)
            _put(f, d, DESC_SIZE)
        for v in ints:
            d = struct.pack("<i", v)
            crc = binascii.crc32(d, crc)
            _put(f, d, 4)
        for k in range(len(shape)):
            a = arrays[k]
            crc = binascii.crc32(a, crc)  # over the array's own buffer: no copy
            _put(f, a, shape[k][1] * ITEMSIZE[shape[k][0]])
        _put(f, struct.pack("<I", crc & 0xFFFFFFFF), _CRC_SIZE)
        synced = _sync(f)
    if not synced:
        _sync_all()


def _read_exact(f, buf, n):
    """Read n <= len(buf) bytes into buf (n == len(buf) makes no memoryview); False if short."""
    if n == len(buf):
        return f.readinto(buf) == n
    return f.readinto(memoryview(buf)[:n]) == n


def _crc_stream(f, buf, n):
    """binascii.crc32 of the next n bytes of `f`, read through `buf`; None if the file ends."""
    crc = 0
    while n >= len(buf):
        if not _read_exact(f, buf, len(buf)):
            return None
        crc = binascii.crc32(buf, crc)
        n -= len(buf)
    if n:
        view = memoryview(buf)[:n]
        if f.readinto(view) != n:
            return None
        crc = binascii.crc32(view, crc)
    return crc & 0xFFFFFFFF


def _item(buf, i, tc):
    """Item of typecode `tc` at byte i of `buf` (little-endian), or None when it lies outside
    the 31-bit small-int range (i32 and u32 only; the number is never made)."""
    v = buf[i]
    if tc == "b":
        return v - 256 if v > 127 else v
    if tc == "B":
        return v
    v |= buf[i + 1] << 8
    if tc == "H":
        return v
    if tc == "h":
        return v - 0x10000 if v > 0x7FFF else v
    hi = buf[i + 2] | (buf[i + 3] << 8)
    if tc == "i" and hi > 0x7FFF:
        hi -= 0x10000
    if hi > 0x3FFF or hi < -0x4000:
        return None
    return (hi << 16) | v


def _intact(f, buf):
    """(header fields, crc, None) of the open slot `f` when it is intact (magic, version, size,
    CRC); else (None, None, reason). The fields are HEAD's, a version 2 slot's with mount 0."""
    n = f.seek(0, 2)
    f.seek(0)
    if n < 6 or not _read_exact(f, buf, 6):
        return None, None, "truncated, %d bytes" % n
    magic, version = struct.unpack_from("<4sH", buf, 0)
    if magic != MAGIC:
        return None, None, "bad magic %r, expected %r" % (magic, MAGIC)
    if not OLDEST <= version <= VERSION:
        return None, None, "version %d, expected %d or %d" % (version, OLDEST, VERSION)
    size = _head_size(version)
    f.seek(0)
    if n < size + _CRC_SIZE or not _read_exact(f, buf, size):
        return None, None, "truncated, %d bytes" % n
    if version == 2:
        head = struct.unpack_from(HEAD_2, buf, 0) + (0,)
    else:
        head = struct.unpack_from(HEAD, buf, 0)
    length = head[4]
    if length != n:
        if n < length:
            return None, None, "truncated, %d of %d bytes" % (n, length)
        return None, None, "size %d bytes, header says %d" % (n, length)
    f.seek(0)
    crc = _crc_stream(f, buf, n - _CRC_SIZE)
    if crc is None or not _read_exact(f, buf, _CRC_SIZE):
        return None, None, "truncated while reading"
    stored = struct.unpack_from("<I", buf, 0)[0]
    if stored != crc:
        return None, None, "crc mismatch: stored 0x%08x, computed 0x%08x" % (stored, crc)
    return head, crc, None


def _check_file(f, model_crc, shape, n_ints, buf, check):
    """(seq or None, crc or None, reason or None) of the open slot `f`; see `_check`."""
    head, crc, reason = _intact(f, buf)
    if reason is not None:
        return None, None, reason
    version = head[1]
    n_arrays, n_got, n, seq, crc_model, mode, batch, mount = head[2:]
    if crc_model != model_crc:
        why = "belongs to another model (crc 0x%08x, expected 0x%08x)" % (crc_model, model_crc)
        return seq, None, why
    if n_arrays != len(shape) or n_got != n_ints:
        why = "different shape: %d arrays and %d ints, expected %d and %d"
        return seq, None, why % (n_arrays, n_got, len(shape), n_ints)
    f.seek(_head_size(version))
    for k in range(n_arrays):
        if not _read_exact(f, buf, DESC_SIZE):
            return None, None, "truncated while reading"
        tc, count = struct.unpack_from(DESC, buf, 0)
        if tc != ord(shape[k][0]) or count != shape[k][1]:
            why = "different shape: array %d is %s x %d, expected %s x %d"
            return seq, None, why % (k, chr(tc), count, shape[k][0], shape[k][1])
    need = sizes(shape, n_ints, version)[1]
    if need != n:
        return None, None, "size %d bytes, its arrays need %d" % (n, need)
    if check is not None:
        reason = _check_values(f, shape, n_ints, head, check, buf)
        if reason is not None:
            return seq, None, reason
    return seq, (crc, head), None


def _check_values(f, shape, n_ints, head, check, buf):
    """The reason why `check` (see the module docstring) refuses the intact slot open in `f`
    (its header fields `head`), or None. Reads the ints, then the items of each array that has
    a limit, through `buf`."""
    n_head = sizes(shape, n_ints, head[1])[0]
    f.seek(n_head - 4 * n_ints)
    ints = []
    for k in range(n_ints):
        if not _read_exact(f, buf, 4):
            return "truncated while reading"
        v = _item(buf, 0, "i")
        if v is None:
            return "int %d outside the 31-bit range" % k
        ints.append(v)
    limits = check(ints, head[7], head[8], head[9])
    if isinstance(limits, str):
        return limits
    if len(limits) != len(shape):
        raise ValueError("checkpoint: %d limits, expected %d" % (len(limits), len(shape)))
    pos = n_head
    for k in range(len(shape)):
        tc, count = shape[k]
        size = ITEMSIZE[tc]
        lim = limits[k]
        if lim is not None:
            if not 0 <= lim <= _SMALL:
                raise ValueError("checkpoint: limit %r, expected 0..2**30 - 1" % (lim,))
            f.seek(pos)
            reason = _check_items(f, k, tc, count, lim, buf)
            if reason is not None:
                return reason
        pos += count * size
    return None


def _check_items(f, k, tc, count, lim, buf):
    """The reason why an item of array k (typecode tc, `count` items, next in `f`) lies
    outside [-lim, lim], or None."""
    size = ITEMSIZE[tc]
    per = len(buf) // size
    i = 0
    while i < count:
        m = count - i if count - i < per else per
        if not _read_exact(f, buf, m * size):
            return "truncated while reading"
        for j in range(m):
            v = _item(buf, j * size, tc)
            if v is None:
                return "array %d item %d outside the 31-bit range" % (k, i + j)
            if v < -lim or v > lim:
                return "array %d item %d is %d, expected -%d..%d" % (k, i + j, v, lim, lim)
        i += m
    return None


def _check(path, model_crc, shape, n_ints, buf, check=None):
    """Check the slot at `path` without touching the caller's state.

    -> (None, None, None) no such file; (None, None, reason) not an intact checkpoint;
    (seq, None, reason) an intact checkpoint of another model or shape, or one `check`
    refuses; (seq, (crc, header fields), None) a checkpoint `load` may use, with its CRC."""
    try:
        f = open(path, "rb")
    except OSError as e:
        try:
            os.stat(path)  # ENOENT differs between ports (2, 44 on WebAssembly): ask again
        except OSError:
            return None, None, None
        return None, None, "unreadable (%s)" % (e,)
    try:
        return _check_file(f, model_crc, shape, n_ints, buf, check)
    except OSError as e:
        return None, None, "unreadable (%s)" % (e,)
    finally:
        f.close()


def inspect(path):
    """The header of the slot file at `path`, for a reader that must know how the state was
    made before it loads it (`microprop pull`).

    -> (dict, None) for an intact slot (magic, version, size, CRC), the dict's keys version,
    n_arrays, n_ints, length, seq, model_crc, mode, batch, mount (0 in a version 2 slot);
    (None, reason) otherwise, (None, None) when there is no such file."""
    try:
        f = open(path, "rb")
    except OSError:
        return None, None
    try:
        head, _, reason = _intact(f, bytearray(_CHUNK))
    finally:
        f.close()
    if reason is not None:
        return None, reason
    return _fields(head), None


def _fields(head):
    """HEAD's fields (a version 2 slot's with mount 0) -> inspect's dict."""
    keys = ("version", "n_arrays", "n_ints", "length", "seq", "model_crc", "mode", "batch")
    out = {"mount": head[-1]}
    for k in range(len(keys)):
        out[keys[k]] = head[1 + k]
    return out


def _check_args(model_crc, ints):
    if not 0 <= model_crc <= 0xFFFFFFFF:
        raise ValueError("checkpoint: model crc %r, expected a u32" % (model_crc,))
    if len(ints) > MAX_ITEMS:
        raise ValueError("checkpoint: %d ints, expected <= %d" % (len(ints), MAX_ITEMS))


def save(prefix, model_crc, arrays, ints, mode=0, batch=1, mount=0):
    """Write `arrays` and `ints` (each in [-2**31, 2**31 - 1]), made in learning mode `mode`
    (0..255) with batch size `batch` (1..2**32 - 1) and the sensor's mount `mount` (0..255), as
    the newest checkpoint of the model with CRC `model_crc`; return its sequence number.

    The slot written is the one not holding the newest valid checkpoint of this model and
    shape (or, if there is none, of any model), so that checkpoint survives a cut write."""
    _check_args(model_crc, ints)
    for v in ints:
        if not -0x80000000 <= v <= 0x7FFFFFFF:
            raise ValueError("checkpoint: int %r, expected an i32" % (v,))
    if not 0 <= mode <= 255:
        raise ValueError("checkpoint: mode %r, expected 0..255" % (mode,))
    if not 1 <= batch <= 0xFFFFFFFF:
        raise ValueError("checkpoint: batch %r, expected 1..2**32 - 1" % (batch,))
    if not 0 <= mount <= 255:
        raise ValueError("checkpoint: mount %r, expected 0..255" % (mount,))
    shape = _shape(arrays)
    buf = bytearray(_CHUNK)
    paths = slot_paths(prefix)
    top = 0  # the highest sequence number of any intact slot
    keep = -1  # the slot to keep: newest of this model and shape ...
    keep_any = -1  # ... else newest intact slot
    best = -1
    best_any = -1
    for i in range(2):
        seq, _, reason = _check(paths[i], model_crc, shape, len(ints), buf)
        if seq is None:
            continue
        top = max(top, seq)
        if seq > best_any:
            best_any, keep_any = seq, i
        if reason is None and seq > best:
            best, keep = seq, i
    if keep < 0:
        keep = keep_any
    if top >= 0xFFFFFFFF:
        raise ValueError("checkpoint: sequence number exhausted; clear() the slots")
    path = paths[1] if keep == 0 else paths[0]
    _write(path, top + 1, model_crc, shape, arrays, ints, mode, batch, mount)
    return top + 1


def _read_into(path, shape, arrays, ints_out, buf, checked, version):
    """Read the checked slot `path` (format `version`) into the caller's arrays and ints_out;
    its CRC must still be `checked`, the one `_check` saw (the file must not have changed
    since)."""
    n_head, length = sizes(shape, len(ints_out), version)
    with open(path, "rb") as f:
        crc = _crc_stream(f, buf, n_head)
        if crc is None:
            raise OSError("checkpoint: %s changed while it was loaded" % path)
        f.seek(n_head - 4 * len(ints_out))
        for k in range(len(ints_out)):
            if not _read_exact(f, buf, 4):
                raise OSError("checkpoint: %s changed while it was loaded" % path)
            ints_out[k] = struct.unpack_from("<i", buf, 0)[0]
        f.seek(n_head)
        for k in range(len(shape)):
            a = arrays[k]
            n = shape[k][1] * ITEMSIZE[shape[k][0]]
            if n and f.readinto(a) != n:
                crc = None
                break
            crc = binascii.crc32(a, crc)
        ok = crc is not None and _read_exact(f, buf, _CRC_SIZE)
        crc = crc & 0xFFFFFFFF if ok else None
        if crc != checked or struct.unpack_from("<I", buf, 0)[0] != crc:
            raise OSError("checkpoint: %s changed while it was loaded" % path)


def load(prefix, model_crc, arrays, ints_out, check=None, head=None):
    """Load the newest valid checkpoint of the model with CRC `model_crc` into the caller's
    preallocated `arrays` and the list `ints_out` (its length is the number of ints); with
    `check(ints, mode, batch, mount)` (see the module docstring), only one whose values it
    accepts; the dict `head`, when given, gets the loaded slot's header fields (inspect's).

    -> (seq, ignored): seq is the sequence number loaded, or None when no slot is valid (the
    caller's arrays and ints are then untouched); ignored lists (path, reason) for each slot
    file that exists and was not used (corrupt, truncated, another model or shape, refused by
    the check; an older valid slot is not listed)."""
    _check_args(model_crc, ints_out)
    shape = _shape(arrays)
    buf = bytearray(_CHUNK)
    ignored = []
    best = None
    best_seq = -1
    best_crc = None
    for path in slot_paths(prefix):
        seq, crc, reason = _check(path, model_crc, shape, len(ints_out), buf, check)
        if reason is not None:
            ignored.append((path, reason))
        elif seq is not None and seq > best_seq:
            best, best_seq, best_crc = path, seq, crc
    if best is None:
        return None, ignored
    crc, fields = best_crc
    _read_into(best, shape, arrays, ints_out, buf, crc, fields[1])
    if head is not None:
        head.update(_fields(fields))
    return best_seq, ignored


def clear(prefix="ckpt"):
    """Remove both slots of `prefix` (missing ones are fine): back to the exported weights."""
    for path in slot_paths(prefix):
        try:
            os.remove(path)
        except OSError:
            pass
    _sync_all()
