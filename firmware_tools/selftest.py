"""`microprop selftest PORT`: golden vectors on a board, compared with the host, bit for bit.

Runs on: host.

    microprop selftest /dev/ttyACM0

For owners of a real ESP32 or RP2040: one command proves that the board computes exactly the
integers of the host's NumPy reference (`host/reference.py`, `host/trainref.py`).

1. Probe the board (deploy's probe) and install the device package into /lib/device if it is
   missing or differs from the host's (deploy's build, plan, copy and verify; main.py,
   board.json, the model and the data are left alone). `--no-install` tests what is there.
2. Vectors, made on the host from `--seed`: random models within the numeric contract
   (`host.reference.random_qmodel`, every activation among them, hidden and last), a small
   model trained on synthetic data, and per model random raw feature vectors plus edges (all
   -32768, all 32767, all at the input stage's offsets; int8 layer-0 inputs all -128, 127, 0).
   Training cases: the trained model and a random one with sigmoid / tanh hidden layers, each
   in every mode (last, bias, all), a few hundred steps of `device.train.Trainer`.
3. Copy them to /selftest on the board (a few tens of kB), run
   firmware_tools/board_scripts/selftest_run.py there with `mpremote exec`: every predict and
   training step inside `micropython.heap_lock()` (a value past the 31-bit small-int range
   would allocate), once per kernel the board has (portable, viper). It prints one line per
   model and kernel (a chained crc32 of the classes, of the scores and of each layer's output
   over all vectors) and one per training checkpoint (steps, correct predictions, PRNG state,
   crc32 of each layer's int8 weights, int32 biases and int16 master weights). The host
   computes the same lines.
4. Remove /selftest, then soft reset the board in the friendly REPL so that main.py (the app)
   runs again (`--no-reset` skips it; mpremote's Ctrl-C stopped the app at the start).

A summary table goes to stdout; the status is 0 when everything is bit-exact, else 1 with a
one-line error naming the first mismatch: the model, kernel and vector (rerun on the board
with one line per vector to find it), or the training case, kernel and step, and which value
differs.
"""

import argparse
import binascii
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from microprop.device.modelfile import ACTIVATIONS
from microprop.device.train_plan import LEARN_MODES
from microprop.firmware_tools import deploy, mpremote_run, options
from microprop.firmware_tools.mpremote_run import (
    PORT_HELP,
    mpremote,
    reset_and_say,
    resolve_port,
)
from microprop.firmware_tools.serialport import add_port_argument
from microprop.host.errors import UserError

DEFAULT_SEED = 20240611
BOARD_DIR = "/selftest"
N_RANDOM_MODELS = 11
N_VECTORS = 51  # per model, 6 of them edges
N_STEPS = 200
CHECK_EVERY = 100
HIDDEN_ACTS = ACTIVATIONS[:-1]  # all but softmax, the last layer's only
LAST_ACTS = ACTIVATIONS[-1:] + HIDDEN_ACTS
_MAX_UNITS = 24  # keeps models small for a board's RAM
_N_TRAIN_SAMPLES = 40
_EDGES = ("raw edge: all -32768", "raw edge: all 32767", "raw edge: all at the offsets")
_Q_EDGES = ("int8 edge: all -128", "int8 edge: all 127", "int8 edge: all 0")


# -- the vectors (host) ---------------------------------------------------------------------


@dataclass
class InferModel:
    """One model of the inference part: its raw and int8 input vectors and what they are."""

    name: str
    qmodel: object
    raw: object  # int array (n, F): run through input stage and forward (predict)
    xq: object  # int8 array (m, F): layer-0 inputs, run through forward only
    what: list  # description per vector, raw ones first

    @property
    def n_vectors(self):
        return len(self.raw) + len(self.xq)

    def describe(self):
        sizes = [self.qmodel.layers[0].n_in] + [layer.n_out for layer in self.qmodel.layers]
        acts = ",".join(layer.act for layer in self.qmodel.layers)
        return "%s (%s %s)" % (self.name, "-".join(map(str, sizes)), acts)


@dataclass
class TrainCase:
    """One training run: model, mode, mini-batch, learning-rate shift, PRNG seed, steps."""

    case: int
    model: str
    mode: str
    batch: int
    lr_shift: int
    seed: int
    steps: int
    every: int

    def describe(self):
        return "case %d (%s, mode %s, batch %d, lr_shift %d, seed %d)" % (
            self.case,
            self.model,
            self.mode,
            self.batch,
            self.lr_shift,
            self.seed,
        )


@dataclass
class Vectors:
    models: list  # InferModel
    train_data: dict  # model name -> (qmodel, raw (n, F), labels (n,))
    cases: list  # TrainCase
    files: dict = field(default_factory=dict)  # board file name -> bytes

    @property
    def n_vectors(self):
        return sum(m.n_vectors for m in self.models)

    @property
    def n_steps(self):
        return sum(c.steps for c in self.cases)


def _edges(qmodel, raw_random):
    import numpy as np

    n_in = qmodel.layers[0].n_in
    offsets = np.asarray(qmodel.input_stage.offset, dtype=np.int64)
    raw = [np.full(n_in, -32768), np.full(n_in, 32767), offsets]
    xq = [np.full(n_in, -128), np.full(n_in, 127), np.zeros(n_in)]
    raw = np.concatenate([raw_random, np.array(raw, dtype=np.int64)])
    return raw, np.array(xq, dtype=np.int64)


def _random_models(rng, n, n_vectors):
    """`n` random models within the contract, every activation among them (hidden and last)."""
    from microprop.host import reference

    out = []
    n_random = max(1, n_vectors - 6)
    while True:
        models = []
        for i in range(n):
            last = LAST_ACTS[i % len(LAST_ACTS)]
            q = reference.random_qmodel(rng, n_layers=1 + i % 4, max_units=_MAX_UNITS, last=last)
            models.append(q)
        hidden = {layer.act for q in models for layer in q.layers[:-1]}
        lasts = {q.layers[-1].act for q in models}
        if n < len(LAST_ACTS) + 3 or (hidden >= set(HIDDEN_ACTS) and lasts >= set(LAST_ACTS)):
            break
    for i, q in enumerate(models):
        raw, xq = _edges(q, reference.random_raw(rng, q, n_random))
        what = ["random %d" % j for j in range(n_random)] + list(_EDGES) + list(_Q_EDGES)
        out.append(InferModel("m%d" % i, q, raw, xq, what))
    return out


def trained_model(seed):
    """A small MLP trained and quantized on synthetic data; (qmodel, held-out windows' raw
    features, their class indices)."""
    import numpy as np

    from microprop.host import pipeline, synth

    log = synth.generate(seed=seed % 1000, subjects=4, seconds_per_activity=20)
    ds = pipeline.make_dataset(log, source="synth")
    mlp, meta, _, _ = pipeline.train_model(
        ds, hidden=(12, 8), activation="relu", seed=seed % 1000, epochs=30, patience=30
    )
    qm = pipeline.quantize_model(mlp, meta, ds, qat=False)
    test = np.isin(ds.subjects, meta["data"]["test_subjects"])
    y = pipeline.class_indices(ds.labels[test], meta["classes"])
    order = np.random.default_rng(seed).permutation(int(test.sum()))
    return qm, ds.X[test][order], y[order]


def _extreme_model(rng, lr_shift, batch):
    """A random 3-layer softmax model with sigmoid / tanh hidden layers that passes the
    training bound proof in every mode; (qmodel, raw features, random labels)."""
    from microprop.host import reference, trainref

    for _ in range(10000):
        q = reference.random_qmodel(rng, n_layers=3, max_units=12, last="softmax")
        acts = [layer.act for layer in q.layers[:-1]]
        if q.layers[-1].n_out < 2 or sorted(acts) != ["sigmoid", "tanh"]:
            continue
        try:
            for mode in LEARN_MODES:
                trainref.check_train_bounds(q, mode, batch, lr_shift)
        except ValueError:
            continue
        raw = reference.random_raw(rng, q, _N_TRAIN_SAMPLES)
        return q, raw, rng.integers(0, q.layers[-1].n_out, size=len(raw))
    raise UserError("selftest: no random model passed the training bound proof")


def make_vectors(
    seed=DEFAULT_SEED, n_models=N_RANDOM_MODELS + 1, n_vectors=N_VECTORS, steps=N_STEPS
):
    """Models, vectors and training cases for `seed` (deterministic), with the board's files."""
    import numpy as np

    if n_models < 1 or n_vectors < 7 or steps < 1:
        raise UserError(
            "selftest: expected --models >= 1, --vectors >= 7, --steps >= 1, found %d, %d, %d"
            % (n_models, n_vectors, steps)
        )
    rng = np.random.default_rng(seed)
    models = _random_models(rng, n_models - 1, n_vectors)
    qm, raw, labels = trained_model(seed)
    n_random = n_vectors - 6
    picks = raw[:n_random]
    if len(picks) < n_random:  # few windows: top up with random ones
        from microprop.host import reference

        picks = np.concatenate([picks, reference.random_raw(rng, qm, n_random - len(picks))])
    raw_t, xq_t = _edges(qm, picks)
    what = ["window %d" % j for j in range(n_random)] + list(_EDGES) + list(_Q_EDGES)
    models.append(InferModel("trained", qm, raw_t, xq_t, what))
    extreme = _extreme_model(rng, 7, 4)
    train_data = {
        "trained": (qm, raw[:_N_TRAIN_SAMPLES], labels[:_N_TRAIN_SAMPLES]),
        "random": extreme,
    }
    cases = []
    seeds = [1, 7, 0xFFFF, 12345, 0xACE1, 3]
    every = min(CHECK_EVERY, steps)
    for name, batch, lr_shift in (("trained", 1, 6), ("random", 4, 7)):
        for mode in LEARN_MODES:
            n = len(cases)
            cases.append(TrainCase(n, name, mode, batch, lr_shift, seeds[n % 6], steps, every))
    vectors = Vectors(models, train_data, cases)
    vectors.files = board_files(vectors)
    return vectors


def board_files(vectors):
    """File name -> bytes of everything the board reads from BOARD_DIR."""
    import numpy as np

    from microprop.host import modelfile

    files = {}
    manifest = []
    # One file per model, its model file then its vectors: a board's littlefs gives every file
    # at least one block (4 kB), and a small emulated flash (256 kB) holds few.
    for m in vectors.models:
        mpm = modelfile.to_bytes(m.qmodel)
        raw = np.asarray(m.raw, dtype="<i4")
        files[m.name + ".bin"] = mpm + raw.tobytes() + np.asarray(m.xq, dtype="i1").tobytes()
        manifest.append("I %s %d %d" % (m.name, len(mpm), len(raw)))
    for name, (q, raw, labels) in vectors.train_data.items():
        mpm = modelfile.to_bytes(q)
        labels = np.asarray(labels, dtype="u1").tobytes()
        files["t-%s.bin" % name] = mpm + labels + np.asarray(raw, dtype="<i4").tobytes()
        manifest.append("D t-%s %d %d" % (name, len(mpm), len(labels)))
    for c in vectors.cases:
        manifest.append(
            "T %d t-%s %s %d %d %d %d %d"
            % (c.case, c.model, c.mode, c.batch, c.lr_shift, c.seed, c.steps, c.every)
        )
    files["manifest.txt"] = ("\n".join(manifest) + "\n").encode()
    return files


# -- what the board must print (host reference) ---------------------------------------------


def _crc(a, dtype, value=0):
    import numpy as np

    return binascii.crc32(np.ascontiguousarray(a, dtype=dtype).tobytes(), value) & 0xFFFFFFFF


def layer_outputs_of(m):
    """Per vector (raw ones, then int8 ones): (class, scores, [layer outputs])."""
    import numpy as np

    from microprop.host import reference

    q = m.qmodel
    rows = []
    for x0 in (reference.input_stage(q, m.raw), np.asarray(m.xq, dtype=np.int64)):
        cls, scores, outs = reference.classify(q, x0)
        for n in range(len(x0)):
            rows.append((int(cls[n]), scores[n], [o[n] for o in outs]))
    return rows


def vector_fields(cls, scores, outs):
    """The crc32 fields of one vector, as the board prints them in detail mode."""
    return ["%d" % cls, "%08x" % _crc(scores, "u1")] + ["%08x" % _crc(y, "i1") for y in outs]


def expected_infer(m):
    """The board's summary fields for model `m`: count, then chained crc32 of the classes,
    the scores and each layer's output over all vectors."""
    rows = layer_outputs_of(m)
    sums = [0] * (2 + len(m.qmodel.layers))
    for cls, scores, outs in rows:
        sums[0] = _crc([cls], "u1", sums[0])
        sums[1] = _crc(scores, "u1", sums[1])
        for k, y in enumerate(outs):
            sums[2 + k] = _crc(y, "i1", sums[2 + k])
    return [str(len(rows))] + ["%08x" % s for s in sums]


def expected_train(case, train_data):
    """The checkpoint lines' fields (after the kernel) of a training case, from TrainRef."""
    from microprop.host import trainref

    q, raw, labels = train_data[case.model]
    ref = trainref.TrainRef(q, case.mode, case.lr_shift, case.batch, case.seed)
    out = []
    for s in range(case.steps):
        n = s % len(labels)
        ref.step(raw[n], int(labels[n]))
        if (s + 1) % case.every == 0:
            fields = [str(ref.steps), str(ref.n_correct), str(ref.state)]
            for k, layer in enumerate(ref.qmodel.layers):
                mw = ref.master_w[k]
                fields += ["%08x" % _crc(layer.w, "i1"), "%08x" % _crc(layer.b, "<i4")]
                fields.append("-" if mw is None else "%08x" % _crc(mw, "<i2"))
            out.append(fields)
    return out


# -- the board side ---------------------------------------------------------------------------


def board_script(detail=None):
    """The script run on the board (firmware_tools/board_scripts/selftest_run.py, whose
    docstring lists the lines it prints); `detail`: (model, kernel) to print one line per
    vector."""
    return mpremote_run.board_script("selftest_run", BOARD_DIR, detail)


def clean_script(make=False):
    """Remove BOARD_DIR (and, with `make`, create it empty)."""
    return mpremote_run.board_script("selftest_clean", BOARD_DIR, make)


def parse_board_output(text):
    """Board output -> (kernels, {(model, kernel): fields}, {(case, kernel): [fields, ...]},
    {(what, kernel): error}, [(model, kernel, index, fields)], finished)."""
    kernels, infer, train, errors, detail = [], {}, {}, {}, []
    finished = False
    for line in re.split(r"[\r\n]+", text):
        w = line.split()
        if not w:
            continue
        if w[0] == "K" and len(w) == 2:
            kernels = w[1].split(",")
        elif w[0] == "I" and len(w) >= 6:
            infer[(w[1], w[2])] = w[3:]
        elif w[0] == "V" and len(w) >= 6:
            detail.append((w[1], w[2], int(w[3]), w[4:]))
        elif w[0] == "T" and len(w) >= 9:
            train.setdefault((int(w[1]), w[2]), []).append(w[3:])
        elif w[0] == "X" and len(w) >= 4:
            errors[(w[1], w[2])] = line.split(" ", 3)[3].strip()
        elif w == ["Z"]:
            finished = True
    return kernels, infer, train, errors, detail, finished


# -- comparing --------------------------------------------------------------------------------


def _infer_fields(n_layers):
    """Names of a vector's fields, and the order to look for a difference in: the layers as
    the board computes them, then the scores and the class."""
    names = ["class", "scores"] + ["layer %d output" % k for k in range(n_layers)]
    return names, list(range(2, 2 + n_layers)) + [1, 0]


def _train_fields(n_layers):
    """Names of a checkpoint's fields, and the order to look for a difference in: weights,
    biases and master weights layer by layer, then the PRNG state and the counts."""
    names = ["steps", "correct predictions", "PRNG state"]
    for k in range(n_layers):
        names += [
            "int8 weights of layer %d" % k,
            "int32 biases of layer %d" % k,
            "int16 master weights of layer %d" % k,
        ]
    return names, list(range(3, 3 + 3 * n_layers)) + [2, 1, 0]


def _first_difference(got, want, fields):
    """'<field> differs (board x, host y)' for the first differing field, or None."""
    names, order = fields
    if len(got) != len(want):
        return "the line has %d fields, expected %d" % (len(got), len(want))
    for i in order:
        if got[i] != want[i]:
            return "%s differs (board %s, host %s)" % (names[i], got[i], want[i])
    return None


@dataclass
class Result:
    kernels: list
    infer_ok: dict  # model name -> True / False
    train_ok: dict  # case -> True / False
    mismatch: str | None  # one line naming the first mismatch or failure
    detail_needed: tuple | None  # (model, kernel) to rerun per vector


def compare(vectors, text):
    """Board output -> Result (the first mismatch, in manifest order, named)."""
    kernels, infer, train, errors, _, finished = parse_board_output(text)
    if not kernels:
        tail = " ".join(text.split())[-200:]
        raise UserError("selftest: the board did not run the vectors: %r" % tail)
    infer_ok, train_ok = {}, {}
    mismatch = detail_needed = None

    def fail(message, detail=None):
        nonlocal mismatch, detail_needed
        if mismatch is None:
            mismatch, detail_needed = message, detail

    for m in vectors.models:
        want = expected_infer(m)
        infer_ok[m.name] = True
        for kernel in kernels:
            where = "inference %s, kernel %s" % (m.describe(), kernel)
            got = infer.get((m.name, kernel))
            if (m.name, kernel) in errors:
                infer_ok[m.name] = False
                fail("the board failed: %s: %s" % (where, errors[(m.name, kernel)]))
            elif got is None:
                infer_ok[m.name] = False
                fail("no result: %s%s" % (where, "" if finished else " (output cut)"))
            elif got != want:
                infer_ok[m.name] = False
                names, order = _infer_fields(len(m.qmodel.layers))
                fields = (["vectors"] + names, [0] + [i + 1 for i in order])
                diff = _first_difference(got, want, fields)
                fail("mismatch: %s: %s" % (where, diff), (m.name, kernel))
    for case in vectors.cases:
        want = expected_train(case, vectors.train_data)
        train_ok[case.case] = True
        names = _train_fields(len(vectors.train_data[case.model][0].layers))
        for kernel in kernels:
            where = "training %s, kernel %s" % (case.describe(), kernel)
            got = train.get((case.case, kernel), [])
            key = (str(case.case), kernel)
            if key in errors:
                train_ok[case.case] = False
                fail("the board failed: %s: %s" % (where, errors[key]))
                continue
            for i, fields in enumerate(want):
                step = (i + 1) * case.every
                if i >= len(got):
                    train_ok[case.case] = False
                    fail("no result: %s: no checkpoint at step %d" % (where, step))
                    break
                diff = _first_difference(got[i], fields, names)
                if diff:
                    train_ok[case.case] = False
                    fail("mismatch: %s: at step %d, %s" % (where, step, diff))
                    break
    return Result(kernels, infer_ok, train_ok, mismatch, detail_needed)


def first_vector_mismatch(model, kernel, text):
    """Detail output of one model and kernel -> a message naming the first differing vector,
    or None when every vector matches."""
    rows = {
        i: fields
        for name, k, i, fields in parse_board_output(text)[4]
        if (name, k) == (model.name, kernel)
    }
    names = _infer_fields(len(model.qmodel.layers))
    for i, (cls, scores, outs) in enumerate(layer_outputs_of(model)):
        want = vector_fields(cls, scores, outs)
        got = rows.get(i)
        if got is None:
            return "vector %d (%s): no line from the board" % (i, model.what[i])
        diff = _first_difference(got, want, names)
        if diff:
            return "vector %d (%s): %s" % (i, model.what[i], diff)
    return None


# -- the command ------------------------------------------------------------------------------


def _deploy_args(port, args, build_dir):
    parser = argparse.ArgumentParser()
    deploy.add_arguments(parser)
    argv = [port, "--build-dir", str(build_dir), "--timeout", str(args.timeout)]
    return parser.parse_args(argv + (["--source"] if args.source else []))


def ensure_package(port, state, args, build_dir):
    """Install the device package into /lib/device where it differs from the host's (deploy's
    build, plan, copy and verify; nothing outside /lib/device) -> (status line, the board's
    state after)."""
    fmt = None if args.source else deploy.board_format(state)
    items = [
        i
        for i in deploy.build(_deploy_args(port, args, build_dir), fmt, build_dir)
        if i.target.startswith(deploy.LIB_DIR + "/")
    ]
    copy, same, stale = deploy.plan(items, state)
    if not copy and not stale:
        return "device package: %d files, as on the host" % len(same), state
    after = deploy.install(
        port, items, copy, stale, state, args.timeout, "installing the device package"
    )
    line = "device package: %d of %d files installed (%d bytes), %d removed, verified by %s" % (
        len(copy),
        len(items),
        sum(i.size for i in copy),
        len(stale),
        after.algo,
    )
    return line, after


def _copy_vectors(port, vectors, folder, state, timeout):
    need = sum(-(-len(b) // 4096) * 4096 for b in vectors.files.values())
    if need > state.free:
        raise UserError(
            "selftest: not enough flash for the vectors: %d bytes, %d free (try --vectors 20 "
            "or --models 6)" % (need, state.free)
        )
    chain = ["exec", clean_script(make=True)]
    for name, data in sorted(vectors.files.items()):
        path = Path(folder) / name
        path.write_bytes(data)
        chain += ["+", "fs", "cp", str(path), ":%s/%s" % (BOARD_DIR, name)]
    mpremote(port, chain, "copying the vectors", timeout, stall=True)
    return sum(len(b) for b in vectors.files.values())


def _run_on_board(port, script, timeout, what):
    return mpremote(port, ["exec", script], what, timeout, stall=True)


def _cleanup(port, timeout):
    try:
        mpremote(port, ["exec", clean_script()], "removing the vectors", timeout)
    except UserError:
        pass


def summary(vectors, result):
    """The table: one line for inference, one for training."""
    bad_infer = sum(not ok for ok in result.infer_ok.values())
    bad_train = sum(not ok for ok in result.train_ok.values())
    return [
        "  inference: %d/%d models, %d vectors, %s"
        % (
            len(vectors.models) - bad_infer,
            len(vectors.models),
            vectors.n_vectors,
            "bit-exact" if not bad_infer else "%d MISMATCHED" % bad_infer,
        ),
        "  training:  %d/%d cases (modes %s), %d steps, %s"
        % (
            len(vectors.cases) - bad_train,
            len(vectors.cases),
            ", ".join(LEARN_MODES),
            vectors.n_steps,
            "bit-exact" if not bad_train else "%d MISMATCHED" % bad_train,
        ),
    ]


def run(args):
    """`microprop selftest`: 0 on full parity; UserError (one line) otherwise."""
    t0 = time.monotonic()
    try:
        return _run(args, t0)
    except UserError as e:
        if e.message.startswith("selftest: "):
            raise
        msg = e.message.removeprefix("deploy: ")
        if "no module named 'device" in msg:
            msg = (
                "the board has no device package in %s: run without --no-install, or "
                "microprop deploy" % deploy.LIB_DIR
            )
        raise UserError("selftest: " + msg, hint=e.hint) from None


def _run(args, t0):
    vectors = make_vectors(args.seed, args.models, args.vectors, args.steps)
    port = resolve_port(args.port)
    timeout = args.timeout
    state = deploy.probe(port, [], timeout)  # mpremote's Ctrl-C stops the app: reset after
    print(
        "--- selftest on %s: MicroPython %s (%s), %d bytes free"
        % (port, state.version, state.platform, state.free)
    )
    copied = False
    try:
        if args.no_install:
            print("--- device package: as found on the board (--no-install)")
        else:
            build_dir = Path(args.build_dir or deploy.default_build_dir())
            line, state = ensure_package(port, state, args, build_dir)
            print("--- " + line)
        with tempfile.TemporaryDirectory(prefix="microprop-selftest-") as folder:
            copied = True
            size = _copy_vectors(port, vectors, folder, state, timeout)
        print(
            "--- vectors: %d models, %d vectors, %d training cases (seed %d), %d bytes in %s"
            % (
                len(vectors.models),
                vectors.n_vectors,
                len(vectors.cases),
                args.seed,
                size,
                BOARD_DIR,
            )
        )
        result = _run_vectors(port, vectors, timeout)
    finally:
        if copied and not args.keep:
            _cleanup(port, timeout)
        if not args.no_reset:
            _reset(port)
    print(
        "selftest on %s, kernels %s (each runs every vector and case):"
        % (port, ", ".join(result.kernels))
    )
    for line in summary(vectors, result):
        print(line)
    if result.mismatch:
        raise UserError("selftest: " + result.mismatch)
    print(
        "selftest passed in %.1f s: the board computes the host's integers, bit for bit"
        % (time.monotonic() - t0)
    )
    return 0


def _run_vectors(port, vectors, timeout):
    """Run the vectors on the board -> Result; an inference mismatch is rerun with one line
    per vector for its model and kernel, to name the first differing vector."""
    result = compare(vectors, _run_on_board(port, board_script(), timeout, "running the vectors"))
    if result.detail_needed:
        name, kernel = result.detail_needed
        model = next(m for m in vectors.models if m.name == name)
        text = _run_on_board(port, board_script((name, kernel)), timeout, "rerunning one model")
        which = first_vector_mismatch(model, kernel, text)
        if which:
            result.mismatch = "mismatch: inference %s, kernel %s: %s" % (
                model.describe(),
                kernel,
                which,
            )
    return result


def _reset(port):
    try:
        reset_and_say(port, " again")
    except UserError as e:
        print("--- no soft reset: %s" % e)


def add_arguments(parser):
    """Options of `microprop selftest`."""
    add_port_argument(parser, PORT_HELP)
    parser.add_argument(
        "--seed", type=options.seed, default=DEFAULT_SEED, help="seed of the vectors (%(default)s)"
    )
    parser.add_argument(
        "--models",
        type=int,
        default=N_RANDOM_MODELS + 1,
        help="models, one of them trained on synthetic data (%(default)s)",
    )
    parser.add_argument(
        "--vectors", type=int, default=N_VECTORS, help="vectors per model, 6 edges (%(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=N_STEPS, help="training steps per case (%(default)s)"
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="test the device package found on the board; do not update it",
    )
    parser.add_argument("--source", action="store_true", help="install .py source, no .mpy")
    parser.add_argument("--keep", action="store_true", help=f"leave {BOARD_DIR} on the board")
    parser.add_argument("--no-reset", action="store_true", help="no soft reset at the end")
    parser.add_argument("--build-dir", metavar="DIR", help="cache of compiled .mpy files")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds an mpremote call may go without output (%(default)s)",
    )
