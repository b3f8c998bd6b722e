"""`microprop selftest`'s clean-up on the board: remove the vectors' folder, or empty it.

Runs on: board (MicroPython, from `mpremote exec`; the host appends `main(folder, make)`).
`make`: create the folder again, empty.
"""

import os


def main(folder, make):
    try:
        names = [e[0] for e in os.ilistdir(folder)]
    except OSError:
        names = None
    if names is not None:
        for name in names:
            os.remove(folder + "/" + name)
        os.rmdir(folder)
    if make:
        os.mkdir(folder)
