"""The board app's serial protocol, host side: one line in, one small record or None out.

Runs on: host.

The board prints ASCII lines, a keyword then space-separated fields (DESIGN.md, "The board
app and the serial line"); every keyword, field tag, command word and mode is the board's own,
imported from device/protocol.py, and written nowhere else::

    pred t=<ms> class=<name> score=<0..255> us=<int> <name>:<0..255> ...
    sample t=<ms> <channel>=<int> ...
    train step=<n> label=<name> correct=<0/1> acc=<0..100>
    info <key>=<value> ...
    err <code> <message>

`parse_line` turns one line (str or bytes, with or without its `\\n` / `\\r\\n`) into a `Pred`,
`Sample`, `Train`, `Info` or `Err`, and anything else into None: garbage bytes, a line cut short
by a reset, a REPL banner. It never raises. A line is refused whole rather than half-read: every
field must be well formed, required fields present, values in range, and a `pred` line's class
must be among its scores, which catches most lines cut between two pairs.

The host sends `command(...)` lines the other way: `command(CMD_MODE, RECORD)` ->
`mode record`, `command(CMD_LABEL, "walking")`, `command(CMD_INFO)`.
"""

from dataclasses import dataclass, field

from microprop.device import protocol as board
from microprop.device.protocol import (  # noqa: F401 (the host's names for the command words and modes)
    CMD_INFO,
    CMD_LABEL,
    CMD_MODE,
    CMD_MOUNT,
    CMD_RATE,
    CMD_RESET_MODEL,
    CMD_SAVE,
    COMMANDS,
    IDLE,
    MODES,
    MOUNT_CANCEL,
    MOUNT_PICK,
    MOUNT_SEARCH,
    MOUNT_WINDOW,
    PREDICT,
    RECORD,
)
from microprop.host.errors import UserError

PRED, SAMPLE, TRAIN, INFO, ERR = (
    k.decode() for k in (board.PRED, board.SAMPLE, board.TRAIN, board.INFO, board.ERR)
)
KINDS = (PRED, SAMPLE, TRAIN, INFO, ERR)
_T, _CLASS, _SCORE, _US = (k.decode() for k in (board.T, board.CLASS, board.SCORE, board.US))
_STEP, _LABEL, _CORRECT, _ACC = (
    k.decode() for k in (board.STEP, board.LABEL, board.CORRECT, board.ACC)
)
MAX_LINE = 1024  # longest line the host reads as one line; the board's are far shorter

_INT16 = (-32768, 32767)


@dataclass(frozen=True)
class Pred:
    """`pred`: one prediction; scores are softmax outputs + 128, in [0, 255]."""

    t_ms: int
    class_name: str
    score: int
    us: int
    scores: dict = field(default_factory=dict)  # class name -> 0..255, in the board's order
    extra: dict = field(default_factory=dict)  # other key=value fields, as strings
    kind = PRED


@dataclass(frozen=True)
class Sample:
    """`sample`: one raw sensor sample in integer counts (int16)."""

    t_ms: int
    values: dict  # channel -> int, in the board's order
    kind = SAMPLE


@dataclass(frozen=True)
class Train:
    """`train`: one on-board training step."""

    step: int
    label: str
    correct: bool
    acc: int  # percent, 0..100
    kind = TRAIN


@dataclass(frozen=True)
class Info:
    """`info`: state and answers; `fields` holds the key=value pairs, `text` the whole rest."""

    fields: dict
    text: str
    kind = INFO


@dataclass(frozen=True)
class Err:
    """`err`: a refused command or a recovered fault; nothing changed on the board."""

    code: str
    message: str
    kind = ERR


def decode(data):
    """Bytes of one line -> str (undecodable bytes become U+FFFD); str is returned as is."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data).decode("ascii", errors="replace")
    return data


def parse_line(line):
    """One line (str or bytes) -> Pred, Sample, Train, Info or Err; None if it is not one."""
    try:
        text = decode(line).rstrip("\r\n")
        if not text or len(text) > MAX_LINE or not _printable(text):
            return None
        keyword, _, rest = text.partition(" ")
        parser = _PARSERS.get(keyword)
        return parser(rest.strip(" ")) if parser else None
    except Exception:  # a parser bug must not take a monitor down: the line is just unread
        return None


def command(name, *args):
    """A host -> board line: command(CMD_MODE, RECORD) -> 'mode record\\n'."""
    text = " ".join([name, *map(str, args)])
    if "\n" in text or "\r" in text or not text.isascii():
        raise UserError("protocol: a command is one ASCII line, found %r" % text)
    return text + "\n"


# -- the line kinds --------------------------------------------------------------------------


def _printable(text):
    return text.isascii() and all(" " <= ch <= "~" or ch == "\t" for ch in text)


def _int(text, lo=None, hi=None):
    """Decimal integer in [lo, hi] or None (no '+', no '_', no spaces)."""
    body = text[1:] if text.startswith("-") else text
    if not body or not body.isdigit() or len(body) > 12:
        return None
    v = int(text)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        return None
    return v


def _pairs(rest, sep):
    """'a=1 b=2' -> [('a', '1'), ('b', '2')], or None if a token is not `key<sep>value`."""
    out = []
    for token in rest.split():
        key, found, value = token.partition(sep)
        if not found or not key or not value:
            return None
        out.append((key, value))
    return out


def _parse_pred(rest):
    fields, scores = {}, {}
    for token in rest.split():
        if "=" in token:
            key, _, value = token.partition("=")
            if not key or not value or key in fields:
                return None
            fields[key] = value
        else:
            name, colon, value = token.rpartition(":")
            v = _int(value, 0, 255)
            if not colon or not name or v is None or name in scores:
                return None
            scores[name] = v
    t = _int(fields.pop(_T, ""), 0)
    name = fields.pop(_CLASS, "")
    score = _int(fields.pop(_SCORE, ""), 0, 255)
    us = _int(fields.pop(_US, ""), 0)
    if t is None or not name or score is None or us is None:
        return None
    if scores and scores.get(name) != score:  # a line cut between pairs, or a mixed-up one
        return None
    return Pred(t, name, score, us, scores, fields)


def _parse_sample(rest):
    pairs = _pairs(rest, "=")
    if not pairs or pairs[0][0] != _T or len(pairs) < 2:
        return None
    t = _int(pairs[0][1], 0)
    values = {}
    for name, text in pairs[1:]:
        v = _int(text, *_INT16)
        if v is None or name in values or name == _T:
            return None
        values[name] = v
    return None if t is None else Sample(t, values)


def _parse_train(rest):
    pairs = _pairs(rest, "=")
    if pairs is None:
        return None
    fields = dict(pairs)
    step = _int(fields.get(_STEP, ""), 0)
    label = fields.get(_LABEL, "")
    correct = _int(fields.get(_CORRECT, ""), 0, 1)
    acc = _int(fields.get(_ACC, ""), 0, 100)
    if step is None or not label or correct is None or acc is None:
        return None
    return Train(step, label, bool(correct), acc)


def _parse_info(rest):
    fields = {}
    for token in rest.split():
        key, eq, value = token.partition("=")
        if eq and key:
            fields[key] = value
    return Info(fields, rest)


def _parse_err(rest):
    code, _, message = rest.partition(" ")
    if not code:
        return None
    return Err(code, message.strip())


_PARSERS = {
    PRED: _parse_pred,
    SAMPLE: _parse_sample,
    TRAIN: _parse_train,
    INFO: _parse_info,
    ERR: _parse_err,
}
