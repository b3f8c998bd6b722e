"""The line protocol: the host's parser (every line kind, line endings, garbage, cut lines),
the board's writer and command parser against it, and one home for the protocol's words.

Runs on: host (pytest), plus the `micropython` binary for the board's writer.

Round trips: every line kind that device/protocol.py's LineWriter writes (the board app's only
writer, here under CPython and the real `micropython`) parses back into the same values, and
every command `command(...)` builds gets the board app's answer, not `err command`. The guard
scans device/, firmware_tools/ and host/ for string literals that spell a line kind, a field tag
or a command line outside device/protocol.py.
"""

import ast
import io
import random
import re

import pytest

from microprop.device import protocol as board
from microprop.firmware_tools.protocol import (
    CMD_INFO,
    CMD_LABEL,
    CMD_MODE,
    CMD_MOUNT,
    CMD_RATE,
    CMD_RESET_MODEL,
    CMD_SAVE,
    COMMANDS,
    IDLE,
    KINDS,
    MAX_LINE,
    MODES,
    PREDICT,
    RECORD,
    Err,
    Info,
    Pred,
    Sample,
    Train,
    command,
    parse_line,
)
from microprop.host.errors import UserError

from .conftest import ROOT, run_micropython
from .fakes import fake_app

PRED = "pred t=1234 class=walk score=200 us=5012 idle:55 walk:200 run:0"
SAMPLE = "sample t=20 ax=4101 ay=-12 az=230 gx=-5"
TRAIN = "train step=7 label=walk correct=1 acc=85"
BANNER = "MicroPython v1.24.0 on 2024-10-25; linux [GCC 12.2.0] version"


def test_pred_line():
    p = parse_line(PRED)
    assert p == Pred(1234, "walk", 200, 5012, {"idle": 55, "walk": 200, "run": 0}, {})
    assert list(p.scores) == ["idle", "walk", "run"]  # the board's class order
    assert p.kind == "pred"


def test_pred_keeps_unknown_fields_and_needs_no_scores():
    p = parse_line("pred t=0 class=idle score=255 us=0 smooth=3")
    assert (p.class_name, p.score, p.scores, p.extra) == ("idle", 255, {}, {"smooth": "3"})


@pytest.mark.parametrize(
    "line",
    [
        "pred class=walk score=200 us=5 walk:200",  # no t
        "pred t=1 score=200 us=5 walk:200",  # no class
        "pred t=1 class=walk us=5 walk:200",  # no score
        "pred t=1 class=walk score=200 walk:200",  # no us
        "pred t=1 class=walk score=256 us=5",  # score out of range
        "pred t=1 class=walk score=-1 us=5",
        "pred t=-5 class=walk score=2 us=5",
        "pred t=1 class=walk score=2 us=5 walk:300",
        "pred t=1 class=walk score=200 us=5 idle:55",  # class not among the scores
        "pred t=1 class=walk score=200 us=5 walk:199",  # disagrees with its own score
        "pred t=1 class=walk score=200 us=5 walk:200 walk:200",  # pair twice
        "pred t=1 t=2 class=walk score=200 us=5",  # field twice
        "pred t=1 class=walk score=200 us=5 stray",  # a token that is neither
        "pred t=1.5 class=walk score=200 us=5",
        "pred t=0x10 class=walk score=200 us=5",
        "pred t= class=walk score=200 us=5",
        "pred",
    ],
)
def test_bad_pred_lines_are_refused(line):
    assert parse_line(line) is None


def test_sample_line():
    s = parse_line(SAMPLE)
    assert s == Sample(20, {"ax": 4101, "ay": -12, "az": 230, "gx": -5})
    assert list(s.values) == ["ax", "ay", "az", "gx"]
    assert parse_line("sample t=0 temp=-32768 adc=32767").values == {
        "temp": -32768,
        "adc": 32767,
    }


@pytest.mark.parametrize(
    "line",
    [
        "sample t=1",  # no channel
        "sample ax=1 t=1",  # t first
        "sample t=1 ax=32768",  # outside int16
        "sample t=1 ax=-32769",
        "sample t=1 ax=1 ax=2",
        "sample t=1 ax=1.0",
        "sample t=1 ax",
        "sample t=x ax=1",
    ],
)
def test_bad_sample_lines_are_refused(line):
    assert parse_line(line) is None


def test_train_line():
    assert parse_line(TRAIN) == Train(7, "walk", True, 85)
    assert parse_line("train step=0 label=idle correct=0 acc=0").correct is False
    for bad in ("correct=2", "acc=101", "step=-1", "label="):
        key = bad.split("=")[0]
        fields = dict(f.split("=") for f in TRAIN.split()[1:])
        fields[key] = bad.split("=")[1]
        line = "train " + " ".join("%s=%s" % kv for kv in fields.items())
        assert parse_line(line) is None, line


def test_info_and_err_lines():
    info = parse_line("info mode=predict heap=51200 model=abc123 checkpoint ignored")
    assert info == Info(
        {"mode": "predict", "heap": "51200", "model": "abc123"},
        "mode=predict heap=51200 model=abc123 checkpoint ignored",
    )
    assert parse_line("info").fields == {}
    assert parse_line("err 3 unknown command: mode fly") == Err("3", "unknown command: mode fly")
    assert parse_line("err badlabel") == Err("badlabel", "")
    assert parse_line("err") is None
    assert parse_line("err ") is None


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r", ""])
def test_line_endings_and_bytes(ending):
    for text in (PRED, SAMPLE, TRAIN, "info mode=idle", "err 1 x"):
        as_str = parse_line(text + ending)
        assert as_str is not None
        assert parse_line((text + ending).encode()) == as_str
        assert parse_line(bytearray((text + ending).encode())) == as_str


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\n",
        "\r\n",
        "   ",
        BANNER,
        'Type "help()" for more information.',
        ">>> ",
        "Traceback (most recent call last):",
        "MPY: soft reboot",
        "PRED t=1 class=walk score=200 us=5",  # keywords are lower case
        " pred t=1 class=walk score=200 us=5",  # keyword at the start
        "predict t=1",
        b"\xff\xfe\x00\x01",
        b"pred t=1 class=w\xffalk score=200 us=5",  # a replaced byte inside
        "pred t=1 class=walk score=200 us=5\x00",
        "info mode=\x1b[2J",
        "x" * (MAX_LINE + 1),
        "pred t=1 class=walk score=200 us=5 " + "a:1 " * 300,
    ],
)
def test_garbage_is_none(line):
    assert parse_line(line) is None


@pytest.mark.parametrize("line", [PRED, SAMPLE, TRAIN])
def test_a_line_cut_by_a_reset_is_refused(line):
    # A reset cuts the line anywhere and the boot banner follows on the same line.
    for cut in range(len(line)):
        assert parse_line(line[:cut] + BANNER + "\r\n") is None, line[:cut]
        assert parse_line(line[:cut] + "\xff\xfe" + line) is None, line[:cut]


def test_a_pred_line_cut_inside_its_scores_is_refused():
    for cut in range(PRED.index(" idle:") + 2, len(PRED)):
        p = parse_line(PRED[:cut])
        assert p is None or p.scores.get("walk") == 200, PRED[:cut]


def test_non_lines_never_raise():
    rng = random.Random(0)
    lines = [PRED, SAMPLE, TRAIN, "info a=b", "err 1 m"]
    for _ in range(3000):
        kind = rng.random()
        if kind < 0.3:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
        else:
            data = bytearray(rng.choice(lines).encode())
            for _ in range(rng.randrange(1, 4)):  # flip, drop or insert bytes
                i = rng.randrange(len(data))
                op = rng.randrange(3)
                if op == 0:
                    data[i] = rng.randrange(256)
                elif op == 1:
                    del data[i]
                else:
                    data.insert(i, rng.choice(b" =:-0123456789\r\nabc"))
        result = parse_line(bytes(data))
        assert result is None or result.kind in ("pred", "sample", "train", "info", "err")
    assert parse_line(None) is None
    assert parse_line(12) is None


def test_commands():
    assert command("mode", "record") == "mode record\n"
    assert command("label walking") == "label walking\n"
    assert command("rate", 50) == "rate 50\n"
    with pytest.raises(UserError, match="^protocol: "):
        command("label a\nmode idle")
    with pytest.raises(UserError, match="^protocol: "):
        command("label café")


# -- the board's writer and command parser against the host's parser ------------------------------

# (LineWriter method, its arguments, the record the host must parse back). The writer's methods
# are what the board app calls for each line kind (device/app.py).
WRITTEN = [
    ("pred", (1234, [b"idle", b"walk", b"run"], 1, [55, 200, 0], 5012),
     Pred(1234, "walk", 200, 5012, {"idle": 55, "walk": 200, "run": 0}, {})),
    ("pred", (0, [b"a"], 0, [255], 0), Pred(0, "a", 255, 0, {"a": 255}, {})),
    ("pred", (2**30 - 1, [b"x_y", b"z"], 1, [0, 0], 999999),
     Pred(2**30 - 1, "z", 0, 999999, {"x_y": 0, "z": 0}, {})),
    ("sample", (20, [b"ax", b"ay", b"az", b"gx"], [4101, -12, 230, -5]),
     Sample(20, {"ax": 4101, "ay": -12, "az": 230, "gx": -5})),
    ("sample", (2**30 - 1, [b"temp"], [-32768]), Sample(2**30 - 1, {"temp": -32768})),
    ("sample", (0, [b"a0", b"a1"], [32767, 0]), Sample(0, {"a0": 32767, "a1": 0})),
    ("train", (7, b"walk", 1, 85), Train(7, "walk", True, 85)),
    ("train", (0, b"idle", 0, 0), Train(0, "idle", False, 0)),
    ("train", (2**30 - 1, b"run", 1, 100), Train(2**30 - 1, "run", True, 100)),
    ("info", ("saved=ckpt.1 seq=3 steps=7",),
     Info({"saved": "ckpt.1", "seq": "3", "steps": "7"}, "saved=ckpt.1 seq=3 steps=7")),
    ("info", ("checkpoint=ckpt.0 ignored=bad crc",),
     Info({"checkpoint": "ckpt.0", "ignored": "bad"}, "checkpoint=ckpt.0 ignored=bad crc")),
    ("err", ("label", "unknown class 'nope', expected one of a,b"),
     Err("label", "unknown class 'nope', expected one of a,b")),
    ("err", ("sensor", "read failed: OSError"), Err("sensor", "read failed: OSError")),
]  # fmt: skip


def write_lines(out, size=200):
    """Every WRITTEN line through one device.protocol.LineWriter on `out`."""
    w = board.LineWriter(out, size)
    for method, args, _ in WRITTEN:
        getattr(w, method)(*args)


@pytest.mark.parametrize("out", [io.BytesIO, io.StringIO])
def test_the_board_writer_round_trips_every_line_kind(out):
    stream = out()
    write_lines(stream)
    text = stream.getvalue()
    lines = (text.decode() if isinstance(text, bytes) else text).splitlines()
    assert [parse_line(line) for line in lines] == [rec for _, _, rec in WRITTEN]
    assert {rec.kind for _, _, rec in WRITTEN} == set(KINDS)


def test_the_board_writer_round_trips_under_micropython(micropython):
    script = "import sys\nfrom device.protocol import LineWriter\n"
    script += "w = LineWriter(sys.stdout, 200)\n"
    for method, args, _ in WRITTEN:
        script += "w.%s(*%r)\n" % (method, args)
    lines = run_micropython(micropython, script).splitlines()
    assert [parse_line(line) for line in lines] == [rec for _, _, rec in WRITTEN]


def new_lines(out, seen):
    """The records of the lines `out` received since `seen` of them; (records, new seen)."""
    lines = out.getvalue().decode().splitlines()
    return [parse_line(line) for line in lines[seen:]], len(lines)


def test_the_app_writes_lines_the_host_parses():
    app, out, _ = fake_app()
    app.run(max_samples=4)  # the start info, then a full window and its prediction
    recs, seen = new_lines(out, 0)
    assert isinstance(recs[0], Info) and recs[0].fields["state"] == "start"
    assert recs[1:] == [Pred(60, "walk", 200, app.us, {"idle": 30, "walk": 200, "run": 25}, {})]
    app.handle_line(command(CMD_MODE, RECORD))
    app.run(max_samples=2)
    app.handle_line(command(CMD_LABEL, "run"))
    app.handle_line(command("fly"))
    recs, _ = new_lines(out, seen)
    assert recs == [
        Info({"mode": "record"}, "mode=record"),
        Sample(80, {"ax": 5, "ay": -5}),
        Sample(100, {"ax": 6, "ay": -6}),
        Train(1, "run", False, 0),
        Err("command", "unknown 'fly', expected one of " + ", ".join(COMMANDS)),
    ]


def test_every_command_the_host_builds_is_understood_by_the_board():
    app, out, typed = fake_app()
    app.run(max_samples=4)  # a full window, for `label`
    _, seen = new_lines(out, 0)
    sent = [
        (command(CMD_LABEL, "walk"), Train(1, "walk", True, 100)),
        (command(CMD_SAVE), Info({"saved": "ckpt.0", "seq": "1", "steps": "1"}, None)),
        (command(CMD_RESET_MODEL), Info({"reset": "ok"}, "reset=ok")),
        (command(CMD_INFO), Info({"state": "running"}, None)),
        (command(CMD_RATE, 50), Info({"rate_hz": "50"}, "rate_hz=50")),
        (command(CMD_MODE, RECORD), Info({"mode": RECORD}, "mode=record")),
        (command(CMD_MODE, IDLE), Info({"mode": IDLE}, "mode=idle")),
        (command(CMD_MODE, PREDICT), Info({"mode": PREDICT}, "mode=predict")),
        (command(CMD_MOUNT), Info({"mount": "+x+y+z"}, "mount=+x+y+z")),
    ]
    assert {line.split()[0] for line, _ in sent} == set(COMMANDS)
    assert {line.split()[1] for line, _ in sent if line.startswith(CMD_MODE)} == set(MODES)
    for line, want in sent:
        typed.data = line.encode()  # through the board's line reader
        app.reader.poll()
        recs, seen = new_lines(out, seen)
        assert len(recs) == 1 and type(recs[0]) is type(want), (line, recs)
        if isinstance(want, Info) and want.text is None:  # the answer holds more fields
            assert want.fields.items() <= recs[0].fields.items(), (line, recs[0])
        else:
            assert recs[0] == want, line
    assert app.mode == PREDICT and app.rate_mhz == 50000


# -- one home for every word of the protocol ---------------------------------------------------

# The patterns are made of device.protocol's own words: a line kind starting a line with a field
# or a format after it (b"pred t=", "info saved=%s", "err %s %s", "err config "), a field tag
# written ` <tag>=` (in bytes anywhere; in str on the board, where the host's display texts such
# as "t=%d" do not count), a command line ("mode record", "label %s", "reset-model").
_KINDS = "|".join(k.decode() for k in (board.PRED, board.SAMPLE, board.TRAIN, board.INFO))
_TAGS = (board.T, board.CLASS, board.SCORE, board.US) + (
    board.STEP,
    board.LABEL,
    board.CORRECT,
    board.ACC,
)
LINE_KIND = re.compile(
    r"^(%s|%s) (\S*=|%%|\{)|^%s [\w-]+( |$)" % (_KINDS, board.ERR.decode(), board.ERR.decode())
)
FIELD_TAG = re.compile(r"(^|\s)(%s)=" % "|".join(t.decode() for t in _TAGS))
COMMAND_LINE = re.compile(
    r"^%s (%s)|^(%s|%s) (%%|\{)|(^|\s)%s(\s|$)"
    % (CMD_MODE, "|".join(MODES), CMD_LABEL, CMD_RATE, CMD_RESET_MODEL)
)
# device/main.py reports that the device package failed to import: device.protocol with it.
ALLOWED = {("device/main.py", "err app cannot import device.board: %s: %s")}


def is_protocol_literal(value, on_board):
    """Does this str or bytes literal spell a line kind, a field tag or a command line?"""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    tag = FIELD_TAG.search(text) and (on_board or isinstance(value, bytes))
    return bool(LINE_KIND.search(text) or COMMAND_LINE.search(text) or tag)


def _docstrings(tree):
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant):
                yield body[0].value


def protocol_literals(path, on_board=True):
    """[(line number, literal)] of the string and bytes literals of one source file (docstrings
    left out) that spell a word of the protocol, in the order of the file."""
    tree = ast.parse(path.read_text(), str(path))
    docs = {id(node) for node in _docstrings(tree)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            if id(node) not in docs and is_protocol_literal(node.value, on_board):
                found.append((node.lineno, node.value))
    return sorted(found)


def test_protocol_words_are_written_only_in_device_protocol():
    offenders = []
    for folder in ("device", "firmware_tools", "host"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "device/protocol.py":
                continue
            for lineno, value in protocol_literals(path, folder == "device"):
                if (rel, value) not in ALLOWED:
                    offenders.append("%s:%d: %r" % (rel, lineno, value))
    assert not offenders, "protocol words outside device/protocol.py:\n" + "\n".join(offenders)


def test_the_guard_finds_protocol_literals(tmp_path):
    src = tmp_path / "x.py"
    src.write_text(
        '"""A docstring may say pred t=1 and info saved=x."""\n'
        'a = b"pred t="\n'
        'b = "info saved=%s" % 1\n'
        'c = b" us="\n'
        'd = "train step=%d label=%s"\n'
        'e = f"mode record {1}"\n'
        'g = "reset-model"\n'
        'h = "label %s" % "walking"\n'
        'i = "information", "t", "mode id %d", "sample rate", "err", "label:"\n'
        'j = "t=%d"\n'
    )
    assert [n for n, _ in protocol_literals(src)] == [2, 3, 4, 5, 6, 7, 8, 10]
    assert [n for n, _ in protocol_literals(src, on_board=False)] == [2, 3, 4, 5, 6, 7, 8]
