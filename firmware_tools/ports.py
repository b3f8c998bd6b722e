"""`microprop ports`: the serial ports, with the boards recognised by their USB VID:PID.

Runs on: host.

One port per line on stdout: device, USB VID:PID, and the recognised board or the port's own
description. Recognised boards come first; the virtual and emulated boards that `microprop board`
serves come last, newest first, as `virtual (unix)` or `virtual (cortex-m0)`. `auto` takes the
first recognised board, else the first USB port, else the newest virtual board.
No ports is not an error: `--- no serial ports found` on stderr, status 0.
"""

import sys

from .serialport import list_ports


def add_arguments(parser):
    """Options of `microprop ports` (none)."""


def run(args):
    ports = list_ports()
    if not ports:
        print("--- no serial ports found", file=sys.stderr)
        return 0
    width = max(len(p.device) for p in ports)
    for p in ports:
        what = p.board or p.description or "serial port"
        if p.board and p.description:
            what += " (%s)" % p.description
        print(("%-*s  %-9s  %s" % (width, p.device, p.usb_id or "-", what)).rstrip())
    return 0
