"""The board's main.py: read board.json, start the app, run for ever.

Runs on: board (deploy copies this file to the board's root as main.py; device/ beside it).
See device/app.py for the board.json keys and device/board.py for the start-up.
"""

try:
    from device.board import main
except ImportError as e:
    print("err app cannot import device.board: %s" % e)
else:
    main("board.json")
