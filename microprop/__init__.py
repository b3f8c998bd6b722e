"""microprop: learning neural networks for MicroPython boards.

Runs on: host (CPython). The folders of the source tree are installed under this namespace:
`microprop.host` (host/: data, features, the float trainer, the quantizer, the integer
reference), `microprop.device` (device/: the board's package; on a board it is /lib/device)
and `microprop.firmware_tools` (firmware_tools/: the `microprop` command and its boards).
"""

from importlib import metadata

try:
    __version__ = metadata.version("microprop")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
