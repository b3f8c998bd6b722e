"""The model file: roundtrip, the golden file, and every bad file rejected with a clear message.

Runs on: host (pytest), plus the `micropython` binary (one process for all bad cases).
"""

import binascii
import struct
from pathlib import Path

import numpy as np
import pytest

from microprop.device import modelfile as layout
from microprop.host import modelfile, reference
from microprop.host.qmodel import ACTIVATIONS

from .conftest import run_micropython
from .data import make_golden

GOLDEN = Path(__file__).resolve().parent / "data" / "golden.mpm"


def _assert_same_qmodel(a, b):
    for key in ("offset", "mult", "shift"):
        assert np.array_equal(getattr(a.input_stage, key), getattr(b.input_stage, key))
    assert (a.input_stage.f_in, a.input_stage.zp_in) == (b.input_stage.f_in, b.input_stage.zp_in)
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert np.array_equal(la.w, lb.w) and np.array_equal(la.b, lb.b)
        assert (la.act, la.f_x, la.zp_x, la.f_w, la.f_z, la.zp_z) == (
            lb.act,
            lb.f_x,
            lb.zp_x,
            lb.f_w,
            lb.f_z,
            lb.zp_z,
        )
        assert (la.table is None) == (lb.table is None)
        if la.table is not None:
            assert np.array_equal(la.table, lb.table)
    assert (a.softmax_exp is None) == (b.softmax_exp is None)
    if a.softmax_exp is not None:
        assert np.array_equal(a.softmax_exp, b.softmax_exp)
    assert list(a.classes) == list(b.classes)


def test_activation_ids_match_qmodel():
    assert layout.ACTIVATIONS == ACTIVATIONS


def test_roundtrip_random_models(tmp_path):
    rng = np.random.default_rng(11)
    for i in range(30):
        q = reference.random_qmodel(rng)
        data = modelfile.to_bytes(q)
        back = modelfile.from_bytes(data)
        _assert_same_qmodel(q, back)
        assert modelfile.to_bytes(back) == data
        path = tmp_path / ("m%d.mpm" % i)
        assert modelfile.write_model(path, q) == len(data)
        assert path.read_bytes() == data
        _assert_same_qmodel(q, modelfile.read_model(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted("m%d.mpm" % i for i in range(30))


def test_roundtrip_keeps_metadata():
    q = make_golden.golden_qmodel()
    back = modelfile.from_bytes(modelfile.to_bytes(q))
    assert back.features == q.features
    assert back.sensor == q.sensor
    assert back.training == q.training


def test_golden_file_decodes_to_expected_values():
    data = GOLDEN.read_bytes()
    assert data[:4] == b"MPRP" and struct.unpack_from("<HHI", data, 4) == (1, 0, len(data))
    m = layout.decode(data)
    assert m["sensor"] == {
        "kind": "mpu6050",
        "rate_mhz": 52500,
        "channels": ["ax", "ay"],
        "units": ["g", "g"],
        "full_scale": [8.0, 8.0],
    }
    assert m["features"] == {"window": 50, "hop": 25, "names": ["mean", "std"]}
    inp = m["input"]
    assert (inp["f_in"], inp["zp_in"]) == (5, -3)
    assert list(inp["offset"]) == [100, -200, 0, 32767]
    assert list(inp["mult"]) == [1, 2047, 0, 65535]
    assert list(inp["shift"]) == [0, 5, 24, 11]
    h, o = m["layers"]
    assert (h["act"], h["n_in"], h["n_out"], h["f_x"], h["zp_x"], h["f_w"], h["f_z"]) == (
        "tanh",
        4,
        3,
        5,
        -3,
        7,
        4,
    )
    assert h["zp_z"] == 10
    assert list(h["w"]) == [1, -1, 127, -127, 0, 2, 3, 4, -5, 6, -7, 8]
    assert list(h["b"]) == [1000, -(2**30) + 1, 2**30 - 1]
    assert list(h["table"][:3]) == [-127, -127, -127] and h["table"][128] == 0
    assert (o["act"], o["n_in"], o["n_out"], o["f_x"], o["zp_x"], o["zp_z"]) == (
        "softmax",
        3,
        2,
        7,
        0,
        -128,
    )
    assert list(o["w"]) == [10, -20, 30, -40, 50, -60] and list(o["b"]) == [-7, 7]
    assert o["table"] is None
    assert list(m["softmax_exp"][:4]) == [65536, 46336, 32761, 23163]
    assert m["classes"] == ["rest", "wave"]
    assert m["training"] == {"batch": 4, "learn": "last", "lr_shift": 7}


def test_golden_file_reencodes_to_identical_bytes():
    data = GOLDEN.read_bytes()
    assert modelfile.encode(layout.decode(data)) == data
    assert modelfile.to_bytes(modelfile.from_bytes(data)) == data
    # The generator still makes exactly this file (a format change must fail here).
    assert modelfile.to_bytes(make_golden.golden_qmodel()) == data


# --- bad files ---


def field_offsets(data):
    """{field label: byte offset} of every field the decoder reads from `data`."""
    offsets = {}
    need = layout.Reader.need

    def recording_need(self, n, what):
        p = need(self, n, what)
        offsets.setdefault(what, p)
        return p

    layout.Reader.need = recording_need
    try:
        layout.decode(data)
    finally:
        layout.Reader.need = need
    return offsets


def fix_up(data):
    """Set the length field and the CRC so that only the content is wrong."""
    body = bytearray(data[:-4])
    struct.pack_into("<I", body, 8, len(body) + 4)
    return bytes(body) + struct.pack("<I", binascii.crc32(body) & 0xFFFFFFFF)


def patch(data, offset, fmt, value, crc=True):
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return fix_up(bytes(b)) if crc else bytes(b)


def bad_cases():
    """(name, bytes, expected message) for the golden file broken in every checked way."""
    g = GOLDEN.read_bytes()
    at = field_offsets(g)
    n = len(g)
    w0 = at["layer 0 weights"]
    cases = [
        ("magic", b"XYZ0" + g[4:], "model file: bad magic b'XYZ0', expected b'MPRP'"),
        ("version", patch(g, 4, "<H", 2), "model file: unknown version 2, expected 1"),
        ("flags", patch(g, 6, "<H", 1), "model file: flags 0x1, expected 0"),
        (
            "crc",
            g[:100] + bytes([g[100] ^ 1]) + g[101:],
            "model file: crc mismatch: stored 0x%08x, computed 0x%08x"
            % (
                struct.unpack_from("<I", g, n - 4)[0],
                binascii.crc32(g[:100] + bytes([g[100] ^ 1]) + g[101:-4]),
            ),
        ),
        (
            "size",
            patch(g, 8, "<I", n + 1, crc=False),
            "model file: size %d bytes, header says %d" % (n, n + 1),
        ),
        ("longer", g + b"\0", "model file: size %d bytes, header says %d" % (n + 1, n)),
        (
            "trailing",
            fix_up(g[:-4] + b"\0" + g[-4:]),
            "model file: 1 unread bytes before the crc at offset %d" % (n - 4),
        ),
        (
            "units",
            patch(g, at["layer 0 n_out"], "<I", 2**31),
            "model file: layer 0 n_out 2147483648, expected 1..1024",
        ),
        (
            "units_max",
            patch(g, at["layer 0 n_out"], "<I", 1025),
            "model file: layer 0 n_out 1025, expected 1..1024",
        ),
        (
            "units_vs_size",
            patch(g, at["layer 0 n_out"], "<I", 1000),
            "model file: layer 0 weights needs 4000 bytes at offset %d, found %d"
            % (w0, n - 4 - w0),
        ),
        (
            "n_in",
            patch(g, at["layer 1 n_in"], "<I", 4),
            "model file: layer 1 n_in 4, expected 3..3",
        ),
        (
            "inputs",
            patch(g, at["input count"], "<H", 65535),
            "model file: input count 65535, expected 1..1024",
        ),
        (
            "layers",
            patch(g, at["layer count"], "<B", 200),
            "model file: layer count 200, expected 1..16",
        ),
        (
            "activation",
            patch(g, at["layer 0 activation"], "<B", 9),
            "model file: layer 0 activation id 9, expected 0..4",
        ),
        (
            "softmax_hidden",
            patch(g, at["layer 0 activation"], "<B", 4),
            "model file: layer 0 activation softmax, expected it on the last layer only",
        ),
        (
            "shift_high",
            patch(g, at["layer 0 f_z"], "<b", -13),
            "model file: layer 0 shift f_x + f_w - f_z 25, expected 0..24",
        ),
        (
            "shift_negative",
            patch(g, at["layer 0 f_z"], "<b", 13),
            "model file: layer 0 shift f_x + f_w - f_z -1, expected 0..24",
        ),
        (
            "zp_x",
            patch(g, at["layer 1 zp_x"], "<b", 5),
            "model file: layer 1 zp_x 5, expected 0..0",
        ),
        (
            "input_shift",
            patch(g, at["input stage"] + 8, "<B", 25),
            "model file: input shift 25, expected 0..24",
        ),
        (
            "input_mult",
            patch(g, at["input stage"] + 4, "<i", -1),
            "model file: input mult -1, expected 0..65535",
        ),
        (
            "weight",
            patch(g, w0 + 5, "<b", -128),
            "model file: layer 0 weight -128 at index 5, expected -127..127",
        ),
        (
            "bias",
            patch(g, at["layer 0 biases"], "<i", 2**30),
            "model file: layer 0 bias 1073741824, expected -1073741823..1073741823",
        ),
        (
            "exp0",
            patch(g, at["softmax table"], "<I", 65535),
            "model file: softmax table entry 0 65535, expected 65536..65536",
        ),
        (
            "exp",
            patch(g, at["softmax table"] + 8, "<I", 70000),
            "model file: softmax table entry 70000, expected 0..65536",
        ),
        (
            "classes",
            patch(g, at["class count"], "<H", 3),
            "model file: class count 3, expected 0 or 2 (the last layer's n_out)",
        ),
        (
            "name_length",
            patch(g, at["class name"], "<B", 255),
            "model file: class name needs 255 bytes at offset %d, found %d"
            % (at["class name"] + 1, n - 4 - at["class name"] - 1),
        ),
        (
            "training_kind",
            patch(g, at["training value kind"], "<B", 7),
            "model file: training value kind 7, expected 0 (int) or 1 (str)",
        ),
    ]
    return cases


def decode_error(data):
    with pytest.raises(ValueError) as e:
        layout.decode(data)
    return str(e.value)


def test_bad_files_raise_expected_vs_found():
    for name, data, message in bad_cases():
        assert decode_error(data) == message, name


def test_every_truncation_raises():
    g = GOLDEN.read_bytes()
    for k in range(len(g)):
        msg = decode_error(g[:k])
        assert msg.startswith("model file: "), (k, msg)
        if k >= 16:
            assert msg == "model file: size %d bytes, header says %d" % (k, len(g)), k
        if 16 <= k < len(g) - 4:
            # With the size and CRC fixed up, a field check must catch the cut instead.
            fixed = fix_up(g[:k] + b"\0\0\0\0")
            assert decode_error(fixed).startswith("model file: "), k


def test_encoder_refuses_out_of_range_fields():
    m = layout.decode(GOLDEN.read_bytes())
    m["layers"][0]["zp_z"] = 200
    with pytest.raises(ValueError, match=r"layer 0 zp_z 200, expected -128\.\.127"):
        modelfile.encode(m)
    m = layout.decode(GOLDEN.read_bytes())
    m["layers"][0]["w"][0] = -128
    with pytest.raises(ValueError, match=r"weight -128"):
        modelfile.encode(m)


BAD_SCRIPT = """
import binascii, struct, sys
from device import modelfile

def error(data):
    try:
        modelfile.decode(data)
    except ValueError as e:
        return str(e)
    return "no error"

def fix_up(data):
    body = bytearray(data[:-4])
    struct.pack_into("<I", body, 8, len(body) + 4)
    return bytes(body) + struct.pack("<I", binascii.crc32(body) & 0xFFFFFFFF)

d = sys.argv[1]
for name in open(d + "/names.txt").read().split():
    try:
        modelfile.load(d + "/" + name + ".mpm")
        print(name, "no error")
    except ValueError as e:
        print(name, e)
with open(d + "/golden.mpm", "rb") as f:
    g = f.read()
print("golden", len(modelfile.load(d + "/golden.mpm")["layers"]))
for k in range(len(g)):
    print("cut", k, error(g[:k]))
    if 16 <= k < len(g) - 4:
        print("cutfix", k, error(fix_up(g[:k] + bytes(4))))
"""


def test_bad_files_under_micropython(tmp_path, micropython):
    cases = bad_cases()
    for name, data, _ in cases:
        (tmp_path / (name + ".mpm")).write_bytes(data)
    (tmp_path / "names.txt").write_text(" ".join(name for name, _, _ in cases))
    g = GOLDEN.read_bytes()
    (tmp_path / "golden.mpm").write_bytes(g)
    out = run_micropython(micropython, BAD_SCRIPT, args=[str(tmp_path)]).splitlines()
    expected = ["%s %s" % (name, message) for name, _, message in cases]
    expected.append("golden 2")
    for k in range(len(g)):
        expected.append("cut %d %s" % (k, decode_error(g[:k])))
        if 16 <= k < len(g) - 4:
            expected.append("cutfix %d %s" % (k, decode_error(fix_up(g[:k] + bytes(4)))))
    assert len(out) == len(expected)
    for got, want in zip(out, expected, strict=True):
        assert got == want
