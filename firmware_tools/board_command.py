"""`microprop board`: serve a virtual board (the Unix port) or an emulated one (qemu) until
Ctrl-C or SIGTERM.

Runs on: host.

Without `--cpu` the board is the MicroPython Unix port on a pseudo-terminal
(firmware_tools/virtualboard.py), its flash a host folder; with `--cpu cortex-m0|cortex-m3|rv32`
it is MicroPython's qemu port on an emulated microcontroller (firmware_tools/emulated.py). The
port goes on stdout, one line, so scripts can read it; status goes to stderr. While it serves,
the board is listed by `microprop ports` and found by `auto` (firmware_tools/running_boards.py).
"""

import argparse
import signal
import sys
import threading

from microprop.host.errors import UserError

from . import running_boards
from .emulated import CPUS, FIRMWARE_ENV, EmulatedBoard
from .virtualboard import (
    DEFAULT_FLASH,
    VirtualBoard,
    format_size,
    parse_flash_size,
    parse_heap,
)

_UNIX_HEAP = "256k"


def add_arguments(parser):
    """Options of `microprop board`."""
    parser.add_argument(
        "--cpu",
        choices=sorted(CPUS),
        help="run MicroPython's qemu port on an emulated cortex-m0 (the RP2040's armv6m), "
        "cortex-m3 or rv32 (the ESP32-C3/C6's rv32imc) instead of the Unix port",
    )
    parser.add_argument(
        "--flash",
        metavar="DIR",
        help="the board's filesystem: a folder (created if missing) without --cpu (required "
        "then); with --cpu, optional, its files are copied onto the emulated flash at start",
    )
    parser.add_argument(
        "--heap",
        metavar="SIZE",
        help="MicroPython heap, e.g. 64k, 256k, 2m (default: %s; with --cpu the firmware's "
        "140k, and a smaller heap is emulated by a blocker at the top of /boot.py, which "
        "raw-REPL sessions such as mpremote's skip: they see the full heap)" % _UNIX_HEAP,
    )
    parser.add_argument(
        "--flash-size",
        type=_size_arg(parse_flash_size),
        metavar="SIZE",
        help="flash size without --cpu: what os.statvfs reports and what files may fill "
        "(OSError ENOSPC past it), e.g. 512k, 2M, 16M (default: %s)" % DEFAULT_FLASH,
    )
    parser.add_argument(
        "--firmware",
        metavar="PATH",
        help="with --cpu: the firmware file, or a folder holding the three (default: $%s, "
        "else ../shared/firmware/qemu beside the project)" % FIRMWARE_ENV,
    )
    parser.add_argument(
        "--icount",
        action="store_true",
        help="with --cpu: run qemu with -icount shift=0,sleep=off, so that time.ticks_us() "
        "counts guest instructions exactly (slower than real time)",
    )


def _size_arg(parse):
    def arg(text):
        try:
            return parse(text)
        except UserError as e:
            raise argparse.ArgumentTypeError(e.message) from None

    return arg


def make_board(args):
    """The board the options describe, not started; ValueError for options that clash."""
    if args.cpu:
        if args.flash_size is not None:
            raise UserError(
                "board: --flash-size is for the virtual board; an emulated board's flash is "
                "the firmware's (2 MB, 256 kB on cortex-m0)"
            )
        return EmulatedBoard(
            args.cpu,
            flash_dir=args.flash,
            heap=args.heap,
            firmware=args.firmware,
            icount=args.icount,
        )
    for flag, given in (("--firmware", args.firmware), ("--icount", args.icount)):
        if given:
            raise UserError("board: %s needs --cpu cortex-m0, cortex-m3 or rv32" % flag)
    if not args.flash:
        raise UserError("board: --flash DIR is required without --cpu")
    return VirtualBoard(
        args.flash,
        heap=parse_heap(args.heap or _UNIX_HEAP),
        flash_size=args.flash_size or parse_flash_size(DEFAULT_FLASH),
    )


def describe(board):
    """One status line: what serves the port."""
    if isinstance(board, EmulatedBoard):
        flash = "files of %s copied onto it" % board.flash_dir if board.flash_dir else "empty"
        return "emulated %s board (%s, %s) on %s: firmware %s, heap %s, flash %s%s" % (
            board.cpu.name,
            board.cpu.arch,
            board.cpu.stands_for,
            board.port,
            board.firmware,
            format_size(board.heap),
            flash,
            ", -icount (ticks_us counts instructions)" if board.icount else "",
        )
    return "virtual board on %s: flash %s (%s), heap %s" % (
        board.port,
        board.flash_dir,
        format_size(board.flash_size),
        board.heap,
    )


def run(args):
    """Serve a board until Ctrl-C or SIGTERM; its port goes on stdout, one line."""
    board = make_board(args)
    kind = "virtual (%s)" % (args.cpu or "unix")
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if in_main else None
    entry = None
    try:
        with board:
            entry = running_boards.register(board.port, kind)
            print(board.port, flush=True)
            print("--- %s; Ctrl-C to stop" % describe(board), file=sys.stderr, flush=True)
            try:
                while not stop.wait(0.5) and not board.error:
                    pass
            except KeyboardInterrupt:
                pass
            if board.error:
                raise UserError(board.error)
    finally:
        if entry:
            running_boards.unregister(entry)
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    print("--- %s stopped" % kind.replace("virtual (unix)", "virtual board"), file=sys.stderr)
    return 0
