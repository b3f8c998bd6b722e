"""`microprop pull`: a board's learned weights back on the host, as a model file.

Runs on: host.

    microprop pull /dev/ttyACM0 --out learned.mpm
    microprop pull auto --save --out learned.mpm      (checkpoint the running app first)

Steps, each an `mpremote connect PORT ...` subprocess under a timeout (as deploy's):

1. `--save`: send `save` to the running app over the serial line, wait for `info saved=`.
2. Probe (one `exec`): board.json's model path, checkpoint prefix and learning settings, and
   which of the model file and the two checkpoint slots exist.
3. Copy (one `fs` chain): those files into a temporary folder.
4. Apply, on the host: the board's own code (device/infer.Model, device/train.Trainer with the
   portable kernel, device/checkpoint.py) loads the newest valid checkpoint of that model file,
   as the board does at boot, with every field checked: the slot's header names the learning
   mode and batch size it was made with (device/checkpoint.inspect), the trainer is made with
   those and board.json's `lr_shift` and `hidden_shift`. A checkpoint of an older format (no
   mode and batch in its header) is refused, naming its version.
5. Write the model file with the learned int8 weights and biases (atomically: a temporary file,
   then rename), and print what changed: steps, sequence number, and per layer how many
   weights and biases differ from the board's model file. The checkpoint's header also holds
   the sensor mount the weights learned in (device/mount.py; the board turns every sample by
   it, device/app.py), which the model file has no place for: a turned one gets a line of its
   own (`--- mount -y+x+z: ...`), and `trainer.mount` carries it to host/boardeval.py's
   `mount` (microprop teach does so).
6. Soft reset, so the board runs its app again (`--no-reset` skips it).

Errors are one line (`UserError`), with a hint: no checkpoint on the board says how to make
one, a checkpoint of an older format how to replace it.
"""

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from microprop.firmware_tools.mpremote_run import (
    HINT,
    PORT_HELP,
    board_errors,
    board_script,
    mpremote,
    open_serial,
    reset_and_say,
    resolve_port,
)
from microprop.firmware_tools.serialport import add_port_argument
from microprop.host.errors import UserError

SAVE_HINT = "send `save` to the board first, e.g. microprop pull PORT --save"
VERSION_HINT = "deploy this microprop to the board, then send `save` (microprop pull PORT --save)"
_TIMEOUT = 30.0
_SAVE_TIMEOUT = 10.0


def probe_script():
    """firmware_tools/board_scripts/pull_probe.py, with board.json's default model and
    checkpoint names."""
    from microprop.device.config import DEFAULTS

    return board_script("pull_probe", DEFAULTS["model"], DEFAULTS["checkpoint"])


def parse_probe(text):
    """mpremote exec output of the probe -> (board.json dict, {board path: size})."""
    config = None
    files = {}
    for line in text.splitlines():
        kind, _, rest = line.strip().partition(" ")
        if kind == "J":
            try:
                config = json.loads(rest)
            except ValueError:
                config = {}
        elif kind == "F":
            size, _, path = rest.partition(" ")
            if size.isdigit() and path:
                files[path] = int(size)
    if config is None:
        text = " ".join(text.split())[-200:]
        raise UserError("pull: the board did not answer the probe: %r (%s)" % (text, HINT))
    return config, files


def board_paths(config):
    """(model path, [slot 0 path, slot 1 path]) on the board, as the app resolves them."""
    from microprop.device.config import check_config

    clean, _ = check_config(config)

    def absolute(p):
        return p if p.startswith("/") else "/" + p

    prefix = absolute(clean["checkpoint"])
    return absolute(clean["model"]), [prefix + ".0", prefix + ".1"], clean


def request_save(port, timeout=_SAVE_TIMEOUT):
    """Send `save` to the running app; the `info saved=...` fields (or UserError)."""
    from microprop.firmware_tools.protocol import Err, Info, parse_line

    with board_errors("pull"), open_serial(port) as ser:
        ser.reset_input_buffer()
        ser.write(b"\nsave\n")
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            buf += ser.read(ser.in_waiting or 1)
            *lines, buf = buf.replace(b"\r", b"\n").split(b"\n")
            for line in lines:
                rec = parse_line(line)
                if isinstance(rec, Info) and "saved" in rec.fields:
                    return rec.fields
                if isinstance(rec, Err) and rec.code == "save":
                    raise UserError("pull: the board refused `save`: %s" % rec.message)
    raise UserError(
        "pull: no `info saved=` from the board in %.0f s (is the app running? is learning "
        "on in board.json?)" % timeout
    )


def _trainer(model, model_file, head, lr_shift, hidden_shift):
    """A portable Trainer on `model` with the mode and batch of checkpoint header `head`
    (device/checkpoint.inspect); ValueError when they are not ones a board could train with."""
    from microprop.device.train import LEARN_MODES, Trainer

    if head["mode"] >= len(LEARN_MODES):
        raise ValueError("mode id %d, expected 0..%d" % (head["mode"], len(LEARN_MODES) - 1))
    return Trainer(
        model,
        LEARN_MODES[head["mode"]],
        lr_shift,
        head["batch"],
        kernel="portable",
        model_path=str(model_file),
        hidden_shift=hidden_shift,
    )


def apply_checkpoint(model_file, prefix, lr_shift=None, hidden_shift=None):
    """Load the newest valid checkpoint `prefix`.0/.1 of `model_file` into the board's Model,
    with the learning mode and batch size its header names, and board.json's shifts.

    -> (model, trainer, seq, ignored): seq None (and trainer None) when no slot is valid;
    ignored [(slot path, reason), ...] of the slots not used (an older valid one aside)."""
    from microprop.device import checkpoint
    from microprop.device.infer import Model

    model = Model(str(model_file), kernel="portable")
    reasons = {}
    heads = []
    for path in checkpoint.slot_paths(str(prefix)):
        head, reason = checkpoint.inspect(path)
        if reason is not None:
            reasons[path] = reason
        elif head is not None:
            heads.append((head["seq"], path, head))
    tried = []
    for _, path, head in sorted(heads, reverse=True):
        made = (head["mode"], head["batch"])
        if made in tried:
            continue
        tried.append(made)
        try:
            trainer = _trainer(model, model_file, head, lr_shift, hidden_shift)
        except ValueError as e:
            reasons[path] = str(e)
            continue
        seq, ignored = trainer.load(str(prefix))
        if seq is not None:
            return model, trainer, seq, ignored
        reasons.update(ignored)
    return model, None, None, sorted(reasons.items())


def changes(before, after):
    """Per layer (weights differing, weights, biases differing, biases, max |weight change|)."""
    out = []
    for a, b in zip(before.layers, after.layers, strict=True):
        dw = np.asarray(b.w, dtype=np.int64) - np.asarray(a.w, dtype=np.int64)
        db = np.asarray(b.b, dtype=np.int64) - np.asarray(a.b, dtype=np.int64)
        big = int(np.abs(dw).max(initial=0))
        out.append((int(np.count_nonzero(dw)), dw.size, int(np.count_nonzero(db)), db.size, big))
    return out


def learned_qmodel(model_file, model):
    """The model file's QModel with the weights and biases of the board `model` in it."""
    from microprop.host.modelfile import read_model

    q = read_model(model_file)
    for layer, live in zip(q.layers, model.layers, strict=True):
        layer.w = np.array(list(live["w"]), dtype=np.int64).reshape(layer.w.shape)
        layer.b = np.array(list(live["b"]), dtype=np.int64)
    return q


def run(args):
    """`microprop pull`: returns 0, or raises UserError (one line)."""
    with board_errors("pull"):
        return _pull(args)


def _pull(args):
    from microprop.device.train_state import slot_of
    from microprop.host.modelfile import read_model, write_model

    out = Path(args.out)
    if out.suffix != ".mpm":
        raise UserError("pull: --out %s, expected a file name ending in .mpm" % args.out)
    if not out.parent.is_dir():
        raise UserError("pull: --out %s: no such folder %s" % (args.out, out.parent))
    port = resolve_port(args.port)
    if args.save:
        fields = request_save(port)
        print("--- saved on the board: %s seq %s" % (fields["saved"], fields.get("seq", "?")))
    config, files = parse_probe(
        mpremote(port, ["exec", probe_script()], "reading the board", args.timeout)
    )
    model_path, slots, clean = board_paths(config)
    if model_path not in files:
        raise UserError("pull: no model file %s on the board (deploy one first)" % model_path)
    present = [s for s in slots if s in files]
    if not present:
        raise UserError(
            "pull: no checkpoint on the board (%s missing): %s" % (" and ".join(slots), SAVE_HINT)
        )
    with tempfile.TemporaryDirectory(prefix="microprop-pull-") as tmp:
        local_model = Path(tmp) / "model.mpm"
        chain = ["fs", "cp", ":" + model_path, str(local_model)]
        for path in present:
            chain += ["+", "fs", "cp", ":" + path, os.path.join(tmp, "ckpt" + path[-2:])]
        mpremote(port, chain, "copying from the board", args.timeout)
        local = os.path.join(tmp, "ckpt")
        model, trainer, seq, ignored = apply_checkpoint(
            local_model, local, clean["lr_shift"], clean["hidden_shift"]
        )
        if seq is None:
            reasons = "; ".join("%s: %s" % (slots[int(p[-1])], r) for p, r in ignored)
            old = any(r.startswith("version ") for _, r in ignored)
            raise UserError(
                "pull: no valid checkpoint of %s on the board (%s): %s"
                % (model_path, reasons or "none", VERSION_HINT if old else SAVE_HINT)
            )
        before = read_model(local_model)
        learned = learned_qmodel(local_model, model)
        slot = slots[int(slot_of(local, seq)[-1])]
    t = trainer
    print(
        "--- board %s: %s, checkpoint %s seq %d (mode %s, %d steps, %d%% correct, batch %d)"
        % (port, model_path, slot, seq, t.mode, t.steps, t.accuracy(), t.batch)
    )
    for path, reason in ignored:
        print("--- ignored %s: %s" % (slots[int(path[-1])], reason))
    if t.mount:
        from microprop.device.mount import name

        print(
            "--- mount %s: the board turns every sample so before the model (board.json "
            '"mount"); the weights learned in it' % name(t.mount)
        )
    for k, (nw, tw, nb, tb, big) in enumerate(changes(before, learned)):
        if nw or nb:
            print(
                "  layer %d: %d of %d weights differ (max |change| %d), %d of %d biases"
                % (k, nw, tw, big, nb, tb)
            )
        else:
            print("  layer %d: unchanged" % k)
    nbytes = write_model(out, learned)
    print("wrote %s (%d bytes): the board's weights after %d steps" % (out, nbytes, trainer.steps))
    if not args.no_reset:
        reset_and_say(port)
    return 0


def add_arguments(parser):
    """Options of `microprop pull`."""
    add_port_argument(parser, PORT_HELP)
    parser.add_argument(
        "--out", required=True, metavar="FILE.mpm", help="model file to write (atomically)"
    )
    parser.add_argument("--save", action="store_true", help="send `save` to the running app first")
    parser.add_argument("--no-reset", action="store_true", help="no soft reset at the end")
    parser.add_argument(
        "--timeout",
        type=float,
        default=_TIMEOUT,
        metavar="S",
        help="seconds per mpremote call (%(default)s)",
    )
