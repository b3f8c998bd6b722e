"""argparse types of the `microprop` commands' options: each says what it expected and found.

Runs on: host.

A bad value raises argparse.ArgumentTypeError; the command's parser (firmware_tools/cli.py)
turns it into `microprop: CMD: argument --opt: message`, exit status 1.
"""

import argparse

SEED_MAX = 2**32 - 1  # numpy's seeds: 0 .. 2**32 - 1


def int_range(lo, hi=None):
    """An int in [lo, hi] (no upper end when hi is None)."""
    expected = "an int %d..%d" % (lo, hi) if hi is not None else "an int >= %d" % lo

    def parse(text):
        try:
            n = int(text)
        except ValueError:
            n = None
        if n is None or n < lo or (hi is not None and n > hi):
            raise argparse.ArgumentTypeError("expected %s, found %r" % (expected, text))
        return n

    parse.__name__ = "int"
    return parse


seed = int_range(0, SEED_MAX)


def csv_list(text, convert=str, what="names", example="a,b"):
    """'a,b,c' -> [convert(a), ...]: items separated by commas, none empty."""
    items = [v.strip() for v in text.split(",")]
    try:
        if not all(items):
            raise ValueError
        return [convert(v) for v in items]
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected %s separated by commas like %s, found %r" % (what, example, text)
        ) from None


def names(text):
    """'8,9,10' -> ['8', '9', '10']."""
    return csv_list(text)


def sizes(text):
    """'32,16' -> [32, 16]: positive ints."""
    out = csv_list(text, int, "positive integers", "32,16")
    if min(out) < 1:
        raise argparse.ArgumentTypeError(
            "expected positive integers separated by commas like 32,16, found %r" % text
        )
    return out


def pins(text):
    """'26,27' or '0x1a' -> [26, 27]: integers in any base Python reads."""
    return csv_list(text, lambda v: int(v, 0), "integers", "26,27")


def choice_list(choices):
    """'a,b' -> ['a', 'b'], each one of `choices`."""

    def parse(text):
        out = csv_list(text, what="names", example=",".join(choices[:2]))
        bad = [v for v in out if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(
                "%r, expected some of %s separated by commas" % (bad[0], ", ".join(choices))
            )
        return out

    parse.__name__ = "list"
    return parse
