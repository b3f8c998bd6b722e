"""The board's main.py: read board.json, start the app, run for ever.

Runs on: board (deploy copies this file to the board's root as main.py; device/ beside it).
See device/config.py for the board.json keys and device/board.py for the start-up.
"""

try:
    from device.board import main
except Exception as e:  # ImportError (no device package), MemoryError (heap too small)
    print("err app cannot import device.board: %s: %s" % (type(e).__name__, e))
else:
    main("board.json")
