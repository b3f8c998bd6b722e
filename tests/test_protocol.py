"""The host's parser of the board app's lines: every line kind, line endings, garbage, cut lines.

Runs on: host (pytest).
"""

import random

import pytest

from firmware_tools.protocol import (
    MAX_LINE,
    Err,
    Info,
    Pred,
    Sample,
    Train,
    command,
    parse_line,
)

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
    with pytest.raises(ValueError, match="^protocol: "):
        command("label a\nmode idle")
    with pytest.raises(ValueError, match="^protocol: "):
        command("label café")
