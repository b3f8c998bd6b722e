"""`microprop selftest`'s vectors, run on the board: the host's golden lines, bit for bit.

Runs on: board (MicroPython, from `mpremote exec`; the host appends `main(folder, detail)`).

Reads `<folder>/manifest.txt` and the model and vector files beside it (see
firmware_tools/selftest.py, `board_files`), and prints:

    K <kernel>,...                                  kernels the board has
    I <model> <kernel> <n> <crc cls> <crc scores> <crc layer 0> ...       per model and kernel
    V <model> <kernel> <i> <cls> <crc scores> <crc layer 0> ...       per vector (detail only)
    T <case> <kernel> <steps> <correct> <state> (<crc w> <crc b> <crc master w|->) per layer
    X <what> <kernel> <exception>                   a case that raised; the others go on
    Z                                               the end

`detail`: None, or (model, kernel) to print one V line per vector of that model only. Every
predict and training step runs inside heap_lock where the port has it.
"""

import binascii
import gc
from array import array

from device import infer
from device.infer import Model
from device.train import Trainer

try:
    import micropython

    _lock = micropython.heap_lock
    _unlock = micropython.heap_unlock
except (ImportError, AttributeError):
    _lock = _unlock = None


def _crc(buf, c):
    return binascii.crc32(buf, c)


def _h(c):
    return "%08x" % (c & 0xFFFFFFFF)


def _run(m, buf, raw):
    if _lock:
        _lock()
    try:
        if raw:
            return m.predict(buf)[0]
        m.forward(buf)
        return m.classify()
    finally:
        if _unlock:
            _unlock()


def infer_model(folder, name, n_mpm, n_raw, kernel, detail):
    with open(folder + "/" + name + ".bin", "rb") as fh:
        m = Model(fh.read(n_mpm), kernel=kernel)
        f = m.n_inputs
        outs = m.layer_outputs
        sums = [0] * (len(outs) + 2)
        cb = bytearray(1)
        n = 0
        for raw, buf in ((True, array("i", bytes(4 * f))), (False, array("b", bytes(f)))):
            size = len(buf) * (4 if raw else 1)
            while (n < n_raw or not raw) and fh.readinto(buf) == size:
                c = _run(m, buf, raw)
                if detail:
                    row = ["V", name, kernel, str(n), str(c), _h(_crc(m.scores, 0))]
                    for y in outs:
                        row.append(_h(_crc(y, 0)))
                    print(" ".join(row))
                else:
                    cb[0] = c
                    sums[0] = _crc(cb, sums[0])
                    sums[1] = _crc(m.scores, sums[1])
                    for k in range(len(outs)):
                        sums[k + 2] = _crc(outs[k], sums[k + 2])
                n += 1
    if not detail:
        print("I", name, kernel, n, " ".join([_h(s) for s in sums]))


def _step(t, x, label):
    if _lock:
        _lock()
    try:
        t.step(x, label)
    finally:
        if _unlock:
            _unlock()


def train_case(folder, sizes, case, name, mode, numbers, kernel):
    batch, lr_shift, seed, steps, every = numbers
    n_mpm, n_labels = sizes[name]
    with open(folder + "/" + name + ".bin", "rb") as fh:
        m = Model(fh.read(n_mpm), kernel=kernel)
        t = Trainer(m, mode, lr_shift, batch, seed)
        f = m.n_inputs
        x = array("i", bytes(4 * f))
        labels = fh.read(n_labels)
        for s in range(steps):
            n = s % n_labels
            fh.seek(n_mpm + n_labels + n * 4 * f)
            fh.readinto(x)
            _step(t, x, labels[n])
            if (s + 1) % every == 0:
                row = ["T", str(case), kernel, str(t.steps), str(t.n_correct), str(t.state)]
                for k in range(len(m.layers)):
                    row.append(_h(_crc(m.layers[k]["w"], 0)))
                    row.append(_h(_crc(m.layers[k]["b"], 0)))
                    mw = t.master_w[k]
                    row.append("-" if mw is None else _h(_crc(mw, 0)))
                print(" ".join(row))


def main(folder, detail):
    kernels = ["portable"]
    if infer.kernel_viper is not None:
        kernels.append("viper")
    if detail:
        kernels = [detail[1]]
    print("K", ",".join(kernels))
    with open(folder + "/manifest.txt") as fh:
        lines = fh.read().split("\n")
    sizes = {}  # training data file -> (model file bytes, labels)
    for line in lines:
        w = line.split()
        if w and w[0] == "D":
            sizes[w[1]] = (int(w[2]), int(w[3]))
        if not w or w[0] == "D" or (detail and (w[0] != "I" or w[1] != detail[0])):
            continue
        for kernel in kernels:
            gc.collect()
            try:
                if w[0] == "I":
                    infer_model(folder, w[1], int(w[2]), int(w[3]), kernel, detail)
                else:
                    numbers = [int(v) for v in w[4:]]
                    train_case(folder, sizes, int(w[1]), w[2], w[3], numbers, kernel)
            except Exception as e:
                print("X", w[1], kernel, "%s: %s" % (type(e).__name__, e))
    print("Z")
