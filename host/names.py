"""Class and channel names: printable text only, escaped wherever a file's names are shown.

Runs on: host.

A name travels into the model file, the board's `pred` lines and the terminal. A label or
column with an ANSI escape or a newline would forge lines of the serial protocol or rewrite
the user's terminal, so training and export refuse it (`check_names`), and `info` and `eval`
show the names of a file made elsewhere escaped (`shown`).
"""

from .errors import UserError


def is_printable(name):
    """True for a non-empty str of printable characters (a space is printable)."""
    return isinstance(name, str) and name != "" and name.isprintable()


def shown(name):
    """`name` as it may be printed: itself when printable, else its escaped repr."""
    text = str(name)
    return text if text.isprintable() else repr(text)[1:-1]


def check_names(names, what, path=None):
    """Refuse a class or channel name that is empty or holds a non-printable character."""
    for name in names:
        if not is_printable(name):
            raise UserError(
                "%s name %r: expected printable text (no control characters, escapes or "
                "newlines)" % (what, str(name)),
                path=path,
            )
