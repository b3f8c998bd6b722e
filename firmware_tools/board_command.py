"""`microprop board`: serve a virtual board (the Unix port) until Ctrl-C or SIGTERM.

Runs on: host.

The port goes on stdout, one line, so scripts can read it; status goes to stderr.
"""

import argparse
import signal
import sys
import threading

from .virtualboard import (
    DEFAULT_FLASH,
    VirtualBoard,
    VirtualBoardError,
    format_size,
    parse_flash_size,
    parse_heap,
)


def add_arguments(parser):
    """Options of `microprop board`."""
    parser.add_argument(
        "--flash",
        required=True,
        metavar="DIR",
        help="folder that is the board's filesystem (created if missing)",
    )
    parser.add_argument(
        "--heap",
        default="256k",
        type=_heap_arg,
        help="MicroPython heap size, e.g. 64k, 256k, 2m (default: %(default)s)",
    )
    parser.add_argument(
        "--flash-size",
        default=DEFAULT_FLASH,
        type=_size_arg(parse_flash_size),
        metavar="SIZE",
        help="flash size: what os.statvfs reports and what files may fill (OSError ENOSPC "
        "past it), e.g. 512k, 2M, 16M (default: %(default)s)",
    )


def _size_arg(parse):
    def arg(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return arg


_heap_arg = _size_arg(parse_heap)


def run(args):
    """Serve a virtual board until Ctrl-C or SIGTERM; its port goes on stdout, one line."""
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if in_main else None
    try:
        with VirtualBoard(args.flash, heap=args.heap, flash_size=args.flash_size) as board:
            print(board.port, flush=True)
            print(
                "--- virtual board on %s: flash %s (%s), heap %s; Ctrl-C to stop"
                % (board.port, board.flash_dir, format_size(board.flash_size), board.heap),
                file=sys.stderr,
                flush=True,
            )
            try:
                while not stop.wait(0.5) and not board.error:
                    pass
            except KeyboardInterrupt:
                pass
            if board.error:
                raise VirtualBoardError(board.error)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    print("--- virtual board stopped", file=sys.stderr, flush=True)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="microprop board", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (VirtualBoardError, ValueError, OSError) as e:
        msg = str(e)
        print(
            msg if msg.startswith("virtual board: ") else "virtual board: " + msg, file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
