"""`microprop pull`'s probe: board.json's settings and which model and checkpoint files exist.

Runs on: board (MicroPython, from `mpremote exec`; the host appends `main(model, checkpoint)`,
the defaults of board.json's `model` and `checkpoint` in device/config.DEFAULTS). Prints
`J <board.json settings as one JSON line>` ({} when it is missing or not an object) and
`F <size> <path>` for each existing file of the model and the two checkpoint slots, as
absolute paths.
"""

import json
import os


def _abs(path):
    return path if path.startswith("/") else os.getcwd().rstrip("/") + "/" + path


def main(model, checkpoint):
    try:
        with open("board.json") as f:
            config = json.load(f)
    except Exception:
        config = {}
    if not isinstance(config, dict):
        config = {}
    print("J", json.dumps(config))

    def name(key, default):
        v = config.get(key)
        return v if isinstance(v, str) and v else default

    prefix = _abs(name("checkpoint", checkpoint))
    for path in (_abs(name("model", model)), prefix + ".0", prefix + ".1"):
        try:
            print("F", os.stat(path)[6], path)
        except OSError:
            pass
