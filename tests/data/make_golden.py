"""Write tests/data/golden.mpm: a small model file whose bytes pin the model file format.

Runs on: host. Usage: python tests/data/make_golden.py

Deterministic and integer-only (no float tables), so it gives the same bytes everywhere. If
the layout in device/modelfile.py changes on purpose, bump its VERSION and rerun this.
The model: 4 features -> 3 tanh units -> 2 softmax classes.
"""

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from microprop.host.inputstage import InputStage  # noqa: E402
from microprop.host.modelfile import to_bytes  # noqa: E402
from microprop.host.qmodel import QLayer, QModel  # noqa: E402

GOLDEN = HERE / "golden.mpm"


def _tanh_table():
    """int8 (256,): a piecewise-linear tanh of z = -128..127, output scale 1/128."""
    z = np.arange(-128, 128)
    return np.clip(z * 2, -127, 127).astype(np.int64)


def _softmax_table():
    """Q16 (256,): e[0] = 2**16, e[d] = round(e[d-1] * 181 / 256), about exp(-0.35 d)."""
    e = [1 << 16]
    for _ in range(255):
        e.append((e[-1] * 181 + 128) >> 8)
    return np.array(e, dtype=np.int64)


def golden_qmodel():
    """The QModel stored in golden.mpm."""
    stage = InputStage(
        offset=np.array([100, -200, 0, 32767], dtype=np.int64),
        mult=np.array([1, 2047, 0, 65535], dtype=np.int64),
        shift=np.array([0, 5, 24, 11], dtype=np.int64),
        f_in=5,
        zp_in=-3,
    )
    hidden = QLayer(
        w=np.array([[1, -1, 127, -127], [0, 2, 3, 4], [-5, 6, -7, 8]], dtype=np.int64),
        b=np.array([1000, -(2**30) + 1, 2**30 - 1], dtype=np.int64),
        act="tanh",
        f_x=5,
        zp_x=-3,
        f_w=7,
        f_z=4,
        zp_z=10,
        table=_tanh_table(),
    )
    out = QLayer(
        w=np.array([[10, -20, 30], [-40, 50, -60]], dtype=np.int64),
        b=np.array([-7, 7], dtype=np.int64),
        act="softmax",
        f_x=7,
        zp_x=0,
        f_w=6,
        f_z=3,
        zp_z=-128,
    )
    return QModel(
        input_stage=stage,
        layers=[hidden, out],
        softmax_exp=_softmax_table(),
        classes=["rest", "wave"],
        features={"window": 50, "hop": 25, "names": ["mean", "std"], "channels": ["ax", "ay"]},
        sensor={
            "kind": "mpu6050",
            "rate_hz": 52.5,
            "full_scale": {"ax": [8.0, "g"], "ay": [8.0, "g"]},
        },
        training={"learn": "last", "lr_shift": 7, "batch": 4},
    )


def main():
    data = to_bytes(golden_qmodel())
    GOLDEN.write_bytes(data)
    print("wrote %s (%d bytes)" % (GOLDEN, len(data)))


if __name__ == "__main__":
    main()
