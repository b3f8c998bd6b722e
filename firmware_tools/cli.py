"""The `microprop` command: one table of subcommands, one `do_<name>` handler each.

Runs on: host.

As mpremote: COMMANDS maps each name to its handler, its options, its help and its examples;
a handler parses nothing itself and prints what its layer's module returns. What the user can
fix is a `UserError` (host/errors.py), bad options included: `main` prints it as `microprop:
message` (and `microprop: hint: ...`) on stderr with exit status 1, as it does an OSError about
a named file. Anything else is a bug and shows its traceback. Ctrl-C is exit status 130.
"""

import argparse
import sys
import time
from dataclasses import dataclass

from microprop import __version__, api
from microprop.device.config import MAX_SHIFT
from microprop.device.train_plan import LEARN_MODES
from microprop.firmware_tools import (
    board_command,
    demo,
    deploy,
    monitor,
    options,
    ports,
    pull,
    record,
    selftest,
    teach,
)
from microprop.host.errors import UserError
from microprop.host.mlp import HIDDEN_ACTIVATIONS, MLP
from microprop.host.names import shown
from microprop.host.optim import OPTIMIZERS

REHEARSE_MAX = 100  # rehearsal windows per class that export and adapt accept


def add_data_options(p, default="synth"):
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default=default,
        metavar="SOURCE",
        help="'synth' (built-in generator), 'shoulder' or 'basic_motions' (shared datasets), "
        "or a sensor-log CSV file (default: %s)"
        % (default or "the data the model was trained on"),
    )
    g.add_argument(
        "--datasets",
        metavar="DIR",
        help="folder of the shared datasets 'shoulder' and 'basic_motions' (default: "
        "$MICROPROP_DATASETS, or ../shared/datasets beside a source checkout)",
    )
    g.add_argument(
        "--seed",
        type=options.seed,
        default=0 if default else None,
        help="random seed (default: 0, or the model's)",
    )
    g.add_argument(
        "--window", type=options.int_range(1), help="window length in samples (default: 2 s)"
    )
    g.add_argument(
        "--hop", type=options.int_range(1), help="hop between windows in samples (default: 1 s)"
    )
    g.add_argument(
        "--channels", metavar="CH,...", help="CSV channel columns (default: the numeric ones)"
    )
    g.add_argument("--label-col", help="CSV label column (default: label)")
    g.add_argument("--subject-col", help="CSV subject column (default: subject)")
    g.add_argument("--recording-col", help="CSV recording column (default: recording)")
    g.add_argument("--time-col", help="CSV time column in ms (default: t_ms)")
    g.add_argument(
        "--full-scale",
        metavar="CH:FS,...",
        help="CSV values are physical units: full scale per channel with its unit, as in the "
        "file's full_scale= (e.g. ax:8g,gx:2000dps or gx:34.9rad/s)",
    )
    g.add_argument(
        "--rate",
        type=float,
        help="CSV sample rate in Hz (needed when the file's first line has no rate_hz)",
    )
    g.add_argument(
        "--ignore-labels",
        metavar="LABEL,...",
        help="leave out the rows with these labels (e.g. unlabelled transitions) and split "
        "their recordings there; rows with an empty label are always left out",
    )


def _data_options(args):
    """The data options as given (text, None where not): microprop.api.DATA_OPTIONS."""
    return {key: getattr(args, key, None) for key in api.DATA_OPTIONS}


def _reading(quiet=False):
    """The progress of reading a CSV log (api.load_log's progress)."""
    return lambda path: ReadProgress(path, quiet)


def _model_data(args):
    """api.model_data of the model file args.model with the data options of the command line
    -> (Dataset, seed)."""
    ds, seed, _ = api.model_data(
        args.model,
        args.data,
        args.seed,
        args.window,
        args.hop,
        args.datasets,
        _reading(),
        **_data_options(args),
    )
    return ds, seed


class ReadProgress:
    """Reading a long sensor log: one line on stderr once the read takes more than `after`
    seconds, rewritten in place on a terminal; elsewhere one line when it is done."""

    def __init__(self, path, quiet=False, stream=None, after=1.0, clock=time.monotonic):
        self.path, self.quiet, self.after, self.clock = path, quiet, after, clock
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = clock()
        self.shown = False

    def __call__(self, lines, total):
        if self.quiet or self.clock() - self.start < self.after or not self.tty:
            return
        self.shown = True
        self.stream.write(
            "\r--- reading %s: %d%% of %d lines" % (self.path, 100 * lines // max(total, 1), total)
        )
        self.stream.flush()

    def done(self, rows):
        seconds = self.clock() - self.start
        if self.quiet or (seconds < self.after and not self.shown):
            return
        line = "--- read %s: %d rows in %.1f s" % (self.path, rows, seconds)
        self.stream.write(("\r" + line.ljust(60) if self.tty else line) + "\n")
        self.stream.flush()


class Progress:
    """Training progress on stderr: one line per epoch, rewritten in place on a terminal."""

    def __init__(self, quiet=False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = 0.0

    def __call__(self, epoch, epochs, loss, val_loss, val_acc, seconds_left):
        if self.quiet:
            return
        now = time.monotonic()
        last_epoch = epoch + 1 >= epochs
        if not self.tty and now - self.last < 1.0 and not last_epoch and epoch > 0:
            return
        self.last = now
        line = "epoch %d/%d  loss %.4f" % (epoch + 1, epochs, loss)
        if val_loss is not None:
            line += "  val_loss %.4f  val_acc %.3f" % (val_loss, val_acc)
        line += "  ~%ds left" % max(0, round(seconds_left))
        if self.tty:
            self.stream.write("\r" + line.ljust(78))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self):
        if self.tty and not self.quiet:
            self.stream.write("\n")


def do_train(args):
    from microprop.host import pipeline
    from microprop.host.metrics import format_report, plot_training, require_matplotlib

    if args.plot:
        require_matplotlib()  # before training, so a missing extra costs nothing
    data_options = _data_options(args)
    ds = api.load_data(
        args.data,
        args.seed,
        args.window,
        args.hop,
        args.datasets,
        _reading(args.quiet),
        **api.read_options(**data_options),
    )
    progress = Progress(args.quiet)
    try:
        model = api.train(
            ds,
            hidden=args.hidden,
            activation=args.activation,
            test_subjects=args.test_subjects,
            seed=args.seed,
            progress=progress,
            optimizer=args.optimizer,
            lr=args.lr,
            batch_size=args.batch_size,
            epochs=args.epochs,
            l2=args.l2,
            patience=args.patience,
            class_weight=args.class_weight,
            data_options=data_options,
        )
    finally:
        progress.done()
    model.save(args.out)
    mlp, meta, report, history = model.mlp, model.meta, model.report, model.history
    test = meta["data"]["test_subjects"]
    train = set(ds.subjects.tolist()) - set(test)
    held = history["held_out"]
    if held["kind"] == "subjects":
        train -= set(held["ids"])
    windows = history["windows"]
    sizes = "-".join(str(n) for n in [mlp.W[0].shape[1]] + [w.shape[0] for w in mlp.W])
    print(pipeline.describe_data(ds))
    print(
        "trained %s MLP on %d windows of subjects %s in %.1f s, %d epochs; saved %s"
        % (
            sizes,
            windows["train"],
            pipeline.subjects_text(train),
            history["seconds"],
            len(history["loss"]),
            args.out,
        )
    )
    print(pipeline.validation_summary(history))
    title = "test subjects %s (float model): %d windows" % (
        pipeline.subjects_text(test),
        windows["test"],
    )
    print(format_report(report, title))
    if args.plot:
        plot_training(history, report, args.plot)
        print("plot written to %s" % args.plot)


_TRAIN_EPILOG = """example:
  microprop train --data synth --hidden 32,16 --out model.npz
  microprop train --data shoulder --test-subjects 8,9,10 --plot curves.png
  microprop train --data log.csv --channels ax,ay,az --full-scale ax:8g,ay:8g,az:8g --rate 50
  microprop train --data imu.csv --ignore-labels -1    (leave out the unlabelled rows)

No window of a test subject is trained on. Early stopping watches training subjects held out
whole (recordings, with one training subject), never windows of the subjects it trains on.
"""


def do_eval(args):
    from microprop.host import pipeline
    from microprop.host.metrics import format_report, plot_confusion

    ds, _ = _model_data(args)
    report = api.evaluate(args.model, ds, args.subjects)
    what = {"int8": "int8 model, the board's integer pipeline", "float": "float model"}
    title = "%s on %s, %s: %d windows (%s)" % (
        args.model,
        ds.source,
        report["which"],
        report["n"],
        what[report["kind"]],
    )
    print(pipeline.describe_data(ds))
    print(format_report(dict(report, classes=[shown(c) for c in report["classes"]]), title))
    if args.plot:
        plot_confusion(report, args.plot, title)
        print("confusion matrix written to %s" % args.plot)


_EVAL_EPILOG = """example:
  microprop eval model.npz                  (the data and test subjects it was trained with)
  microprop eval model.mpm                  (int8: exactly the integers the board computes)
  microprop eval model.npz --data log.csv --plot confusion.png

Scores the model's test subjects when the data holds them (else every subject; --subjects
chooses) and says which, and how many windows.
"""


def do_export(args):
    from microprop.host import rehearsal

    MLP.load(args.model)  # a float model: a board model file is refused here
    ds, _ = _model_data(args)
    qat = {"auto": "auto", "on": True, "off": False}[args.qat]
    done = api.export(args.model, ds, args.out, qat, args.rehearse, args.tflite)
    print("wrote %s (%d bytes): %s" % (done.path, done.nbytes, _sizes(done.qmodel)))
    info = done.quantization
    if info.get("chosen"):
        print(
            "quantization: %s (float %.4f, post-training %.4f%s on training windows)"
            % (
                info["chosen"],
                info.get("float_score", float("nan")),
                info.get("ptq_score", float("nan")),
                (", QAT %.4f" % info["qat_score"]) if info.get("qat_score") is not None else "",
            )
        )
    f, q = done.float_report, done.int_report
    print(
        "%s, %d windows: float accuracy %.4f, int8 accuracy %.4f (%+.2f points)"
        % (done.which, q["n"], f["accuracy"], q["accuracy"], 100 * (q["accuracy"] - f["accuracy"]))
    )
    if done.rehearsal:
        with open(done.rehearsal, "rb") as f:
            data = f.read()
        print(
            "wrote %s (%d bytes): %d rehearsal windows of the training subjects, for on-board "
            "learning in the hidden layers"
            % (done.rehearsal, len(data), len(rehearsal.from_bytes(data)[0]))
        )
    elif done.note:
        print(done.note)
    elif done.removed:
        print("removed %s: it belonged to the model file written before" % done.removed)
    if done.tflite:
        print("wrote %s (TFLite int8, input = the input stage's int8 output)" % done.tflite)


_EXPORT_EPILOG = """example:
  microprop export model.npz                    (writes model.mpm and model.rh for the board)
  microprop export model.npz --out m.mpm --tflite m.tflite --qat on
  microprop export model.npz --rehearse 0       (no rehearsal windows)

model.rh holds a few training windows per class that the board learns from again after each
labelled window when its hidden layers learn (board.json "learn": "bias" or "all"), so that
they keep what the model knew; microprop deploy copies it with the model.
"""


def _sizes(qm):
    return "-".join(str(n) for n in qm.sizes) + " " + ",".join(layer.act for layer in qm.layers)


def do_info(args):
    from microprop.host.modelfile import read_model
    from microprop.host.modelinfo import describe

    print(describe(read_model(args.model), args.model))


_INFO_EPILOG = """example:
  microprop info model.mpm
"""


def do_demo(args):
    """The whole path with no board attached (firmware_tools/demo.py)."""
    demo.run(
        seed=args.seed,
        out=args.out,
        seconds=args.seconds,
        fast=args.fast,
        heap=args.heap,
        progress=Progress(args.quiet),
    )


_DEMO_EPILOG = """example:
  microprop demo              (no board needed: train, export, a virtual board, deploy,
                               live predictions checked against the host)
  microprop demo --seconds 30 --fast
"""


def do_board(args):
    code = board_command.run(args)
    if code:
        raise UserError("virtual board stopped with status %d" % code)


_BOARD_EPILOG = """example:
  microprop board --flash ./vboard --heap 256k      (prints its port, e.g. /dev/pts/5)
  mpremote connect /dev/pts/5 exec "print(1 + 1)"
  microprop board --cpu cortex-m0                   (the RP2040's instruction set, in qemu)
  microprop deploy auto --model model.mpm --data walk.csv
  microprop board --cpu rv32 --icount --heap 96k    (ticks_us counts instructions)

Without --cpu the board is the MicroPython Unix port (64-bit objects) and --flash DIR is its
filesystem. With --cpu it is MicroPython's qemu port on an emulated microcontroller: 32-bit
objects and small ints, native viper code for armv6m (cortex-m0), armv7em (cortex-m3) or
rv32imc (rv32), a 140k heap. Its flash lives in emulated RAM: it survives soft resets, not
machine.reset(), which ends qemu; the command then starts it again with the files of --flash
DIR and says that the flash was lost. Needs qemu (apt-get install qemu-system-arm
qemu-system-misc, or brew install qemu) and the firmware (--firmware, MICROPROP_FIRMWARE, or
../shared/firmware/qemu). While it serves, `microprop ports` lists the board and `auto` finds
it (after any USB board).
"""


def do_deploy(args):
    return deploy.run(args)


def do_monitor(args):
    return monitor.run(args)


def do_record(args):
    return record.run(args)


def do_ports(args):
    return ports.run(args)


def do_pull(args):
    return pull.run(args)


def do_selftest(args):
    return selftest.run(args)


def do_teach(args):
    return teach.run(args)


_DEPLOY_EPILOG = """example:
  microprop deploy auto --model model.mpm --data walk.csv       (replay sensor)
  microprop deploy /dev/ttyACM0 --model model.mpm --sensor mpu6050 --i2c 0 --scl 5 --sda 4
  microprop deploy /dev/pts/5 --model model.mpm --data walk.csv --dry-run
"""
_MONITOR_EPILOG = """example:
  microprop monitor auto --log predictions.csv
  microprop monitor /dev/ttyACM0 --seconds 30 --send "mode predict"
"""
_RECORD_EPILOG = """example:
  microprop record auto --label walking --seconds 60 --out walking.csv --subject 3
"""
_PORTS_EPILOG = """example:
  microprop ports
"""
_PULL_EPILOG = """example:
  microprop pull /dev/ttyACM0 --out learned.mpm      (the newest checkpoint on the board)
  microprop pull auto --save --out learned.mpm       (checkpoint the running app first)
  microprop eval learned.mpm
"""
_TEACH_EPILOG = """example:
  microprop teach /dev/ttyACM0 --classes walking,idle,running --seconds 20
  microprop teach auto --classes walking,idle --seconds 5 --start now    (scripts, replays)

For each class: press Enter and do it for --seconds; every window the board predicts gets a
`label` and a training step on the board. Then `save`, and the accuracy before and after, per
class: after is the pulled weights run on the host over the same windows (replay sensor), or a
check pass of --check-seconds per class (live sensor). Ctrl-C or an error: a soft reset, and the
board runs its last saved weights again.
"""
_SELFTEST_EPILOG = """example:
  microprop selftest /dev/ttyACM0          (installs the device package if it differs)
  microprop selftest auto --no-install --steps 500

Exit status 0 when the board's integers equal the host's bit for bit, else 1 with a one-line
error naming the first mismatch.
"""


def do_adapt(args):
    from microprop.host import adapt

    model = api.Model(*MLP.load(args.model))  # a float model: .mpm refused here
    ds, seed = _model_data(args)

    def progress(text):
        if not args.quiet:
            print("--- " + text, file=sys.stderr)

    result = api.adapt(
        model,
        ds,
        args.test_subjects,
        modes=args.modes,
        epochs=args.epochs,
        seed=seed,
        per_class=args.per_class,
        lr_shift=args.lr_shift,
        lr=args.lr,
        progress=progress,
        hidden_shift=args.hidden_shift,
        float_hidden_shift=args.float_hidden_shift,
        rehearse=args.rehearse,
        remount_sensor=args.remount,
        remount_seed=args.remount_seed,
        learn_mount=args.learn_mount,
    )
    print(adapt.format_adaptation(result))


_ADAPT_EPILOG = """example:
  microprop adapt model.npz            (the data and test subjects it was trained with)
  microprop adapt model.npz --modes last --epochs 20 --per-class 3
  microprop adapt model.npz --lr-shift 6 --lr 0.02       (given rates: no selection)
  microprop adapt model.npz --modes all --lr-shift 6 --hidden-shift 2 --lr 0.02 \
      --float-hidden-shift 2                (hidden layers 4 times slower than the last)
  microprop adapt model.npz --remount --modes last,bias,all    (the sensor re-mounted, turned
                                            90 degrees about z for each test subject)
  microprop adapt model.npz --remount --learn-mount --modes all    (the board finds the mount
                                            first, then its layers learn)

Each test subject's first windows of each class train the int8 model as the board would (bit
for bit); a float SGD baseline trains the same layers on the same windows. Accuracy before and
after on that subject's windows that share no sample with them. The rates (with the hidden
layers' extra shift when they learn) are chosen leave-one-subject-out on the training subjects
unless given. --remount turns each test subject's accelerometer and gyroscope together, as a
re-mounted board reads them (--remount-seed S: one random rotation per subject); the rates are
then chosen with each left-out training subject turned alike. --learn-mount: before the layers
learn, the board's mount search (`mount search`, `mount pick`; microprop teach --find-mount)
picks which of the 24 axis-aligned orientations the adaptation windows are best classified in,
and the subject's samples are turned by it from then on.
"""


def _adapt_options(p):
    from microprop.host import adapt

    p.add_argument("model", help="float model file (.npz) from microprop train")
    add_data_options(p, default=None)
    g = p.add_argument_group("adaptation")
    g.add_argument(
        "--modes",
        type=options.choice_list(LEARN_MODES),
        default=list(adapt.DEFAULT_LEARN_MODES),
        help="what learns: last, bias, all, comma-separated (last,all)",
    )
    g.add_argument(
        "--epochs",
        type=options.int_range(1),
        help="passes over the adaptation set (default: chosen with the rates among %s, or %d "
        "when the rates are given)"
        % (",".join(str(e) for e in adapt.EPOCH_CHOICES), adapt.DEFAULT_EPOCHS),
    )
    g.add_argument(
        "--per-class",
        type=options.int_range(1),
        default=adapt.PER_CLASS,
        help="adaptation windows per class (5)",
    )
    g.add_argument("--test-subjects", type=options.names, help="default: the model's")
    g.add_argument(
        "--lr-shift",
        type=options.int_range(0, MAX_SHIFT),
        help="integer rate 2**-N (default: chosen)",
    )
    g.add_argument("--lr", type=float, help="float baseline rate (default: chosen)")
    g.add_argument(
        "--hidden-shift",
        type=options.int_range(0, MAX_SHIFT),
        help="integer hidden layers at 2**-(N + lr-shift) (default: chosen with the rates, or 0)",
    )
    g.add_argument(
        "--float-hidden-shift",
        type=options.int_range(0),
        help="float hidden layers at lr * 2**-N (default: chosen with the rates, or 0)",
    )
    g.add_argument(
        "--rehearse",
        type=options.int_range(0, REHEARSE_MAX),
        default=adapt.REHEARSE["all"],
        metavar="N",
        help="rehearsal windows per class when hidden layers learn, as export writes them "
        "(default %d; 0: none)" % adapt.REHEARSE["all"],
    )
    g.add_argument(
        "--remount",
        action="store_true",
        help="the test subjects' sensor re-mounted: turned 90 degrees about z (board normal)",
    )
    g.add_argument(
        "--remount-seed",
        type=options.int_range(0),
        metavar="S",
        help="one uniformly random rotation per test subject, drawn from S (implies --remount)",
    )
    g.add_argument(
        "--learn-mount",
        action="store_true",
        help="the board's mount search first: the best of 24 axis-aligned orientations on the "
        "adaptation windows, then the layers learn",
    )
    g.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _train_options(p):
    add_data_options(p)
    g = p.add_argument_group("model and training")
    g.add_argument("--hidden", type=options.sizes, default=[32, 16], help="hidden sizes (32,16)")
    g.add_argument(
        "--activation", choices=HIDDEN_ACTIVATIONS, default="relu", help="hidden layers' (relu)"
    )
    g.add_argument(
        "--optimizer",
        choices=sorted(OPTIMIZERS),
        default="adam",
        help="adam, or sgd / nesterov with momentum 0.9 (adam)",
    )
    g.add_argument("--lr", type=float, default=2e-3, help="learning rate (0.002)")
    g.add_argument(
        "--batch-size", type=options.int_range(1), default=64, help="mini-batch size (64)"
    )
    g.add_argument("--epochs", type=options.int_range(1), default=300, help="maximum epochs (300)")
    g.add_argument("--l2", type=float, default=1e-4, help="L2 penalty on weights (0.0001)")
    g.add_argument(
        "--patience", type=options.int_range(0), default=30, help="early-stopping patience (30)"
    )
    g.add_argument("--class-weight", choices=["balanced"], help="weight classes by frequency")
    g.add_argument("--test-subjects", type=options.names, help="e.g. 8,9,10")
    g.add_argument("--out", default="model.npz", help="float model file (model.npz)")
    g.add_argument("--plot", metavar="FILE.png", help="draw training curves and confusion")
    g.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _eval_options(p):
    p.add_argument(
        "model",
        help="model file: .npz (float, from microprop train) or .mpm (int8, from microprop "
        "export or pull: the board's integers)",
    )
    add_data_options(p, default=None)
    p.add_argument(
        "--subjects",
        type=options.names,
        help="score these subjects (default: the model's test subjects in the data, else all)",
    )
    p.add_argument("--plot", metavar="FILE.png", help="draw the confusion matrix")


def _export_options(p):
    p.add_argument("model", help="float model file (.npz) from microprop train")
    p.add_argument("--out", help="model file to write (default: MODEL with .mpm)")
    p.add_argument("--tflite", metavar="FILE", help="also write a .tflite of the int8 network")
    p.add_argument(
        "--rehearse",
        type=options.int_range(0, REHEARSE_MAX),
        default=5,
        metavar="N",
        help="rehearsal windows per class written beside the model as FILE.rh (default 5; 0: "
        "none)",
    )
    p.add_argument(
        "--qat",
        choices=["auto", "on", "off"],
        default="auto",
        help="quantization-aware fine-tuning: auto (when post-training accuracy drops by "
        "more than 1 point), on, off (default: auto)",
    )
    add_data_options(p, default=None)


def _info_options(p):
    p.add_argument("model", help="model file (.mpm)")


@dataclass(frozen=True)
class Command:
    """One subcommand: its handler, the function that adds its options, its help line and
    the examples shown under `microprop NAME --help`."""

    handler: object
    options: object
    help: str
    epilog: str = ""


COMMANDS = {
    "train": Command(
        do_train,
        _train_options,
        "train a float MLP on sensor windows (subject-wise split)",
        _TRAIN_EPILOG,
    ),
    "eval": Command(do_eval, _eval_options, "evaluate a trained model on a dataset", _EVAL_EPILOG),
    "demo": Command(
        do_demo,
        demo.add_arguments,
        "the whole path on built-in data and a virtual board, no board needed",
        _DEMO_EPILOG,
    ),
    "export": Command(
        do_export,
        _export_options,
        "quantize a float model to int8 and write the board's model file",
        _EXPORT_EPILOG,
    ),
    "info": Command(
        do_info,
        _info_options,
        "show a model file: layers, scales, flash and RAM, headroom",
        _INFO_EPILOG,
    ),
    "board": Command(
        do_board,
        board_command.add_arguments,
        "run a virtual board (Unix port) or an emulated one (qemu) on a pty",
        _BOARD_EPILOG,
    ),
    "deploy": Command(
        do_deploy,
        deploy.add_arguments,
        "compile and copy the device package, model and config",
        _DEPLOY_EPILOG,
    ),
    "monitor": Command(
        do_monitor,
        monitor.add_arguments,
        "watch a board's predictions live, log them, send commands",
        _MONITOR_EPILOG,
    ),
    "record": Command(
        do_record,
        record.add_arguments,
        "record labelled sensor samples from a board into a CSV",
        _RECORD_EPILOG,
    ),
    "ports": Command(
        do_ports, ports.add_arguments, "list serial ports and recognised boards", _PORTS_EPILOG
    ),
    "pull": Command(
        do_pull,
        pull.add_arguments,
        "bring a board's learned weights back as a model file",
        _PULL_EPILOG,
    ),
    "selftest": Command(
        do_selftest,
        selftest.add_arguments,
        "prove a board computes the host's integers, bit for bit",
        _SELFTEST_EPILOG,
    ),
    "teach": Command(
        do_teach,
        teach.add_arguments,
        "guided calibration on the board: each class for a few seconds",
        _TEACH_EPILOG,
    ),
    "adapt": Command(
        do_adapt,
        _adapt_options,
        "measure on-board learning for new subjects, int8 vs float",
        _ADAPT_EPILOG,
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as UserErrors (`microprop: train: argument --hidden: ...`,
    exit status 1 like every other error) instead of the usage text and status 2."""

    def error(self, message):
        name = self.prog.removeprefix("microprop").strip()
        raise UserError("%s%s" % (name + ": " if name else "", message))


def build_parser():
    parser = _Parser(
        prog="microprop",
        description="Train small neural networks on the host, run and train them on "
        "MicroPython boards.",
    )
    parser.add_argument("--traceback", action="store_true", help="show the stack on errors")
    parser.add_argument("--version", action="version", version="microprop " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=command.help,
            description=command.help,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # SUPPRESS: without the flag here, keep the value `microprop --traceback CMD` set.
        p.add_argument(
            "--traceback",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the stack on errors",
        )
        command.options(p)
    return parser


def main(argv=None):
    """Run one command -> exit status: 0, a command's own status, 1 for a UserError or an
    OSError about a named file, 130 for Ctrl-C; any other exception propagates (a bug)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    show_stack = "--traceback" in argv
    try:
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        return COMMANDS[args.command].handler(args) or 0
    except KeyboardInterrupt:
        print("microprop: interrupted", file=sys.stderr)
        return 130
    except UserError as e:
        if show_stack:
            raise
        print("microprop: %s" % _one_line(e.message), file=sys.stderr)
        if e.hint:
            print("microprop: hint: %s" % _one_line(e.hint), file=sys.stderr)
        return 1
    except OSError as e:
        if show_stack or not e.filename:
            raise  # names no file: nothing the user can fix from here
        print("microprop: %s: %s" % (e.filename, e.strerror or e), file=sys.stderr)
        return 1


def _one_line(text):
    return " ".join(str(text).split())
