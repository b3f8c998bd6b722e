"""microprop: learning neural networks for MicroPython boards.

Runs on: host (CPython). The folders of the source tree are installed under this namespace:
`microprop.host` (host/: data, features, the float trainer, the quantizer, the integer
reference), `microprop.device` (device/: the board's package; on a board it is /lib/device)
and `microprop.firmware_tools` (firmware_tools/: the `microprop` command and its boards).
`microprop.api` is the Python interface for scripts and notebooks.
"""

from importlib import metadata
from pathlib import Path

try:
    __version__ = metadata.version("microprop")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def shared_folder():
    """The `shared/` folder beside a source checkout of microprop (datasets, qemu firmware), or
    None: when microprop runs from an installed wheel, or the folder is absent.

    A source checkout is the folder holding pyproject.toml and device/ (an editable install
    imports from it); from a wheel this file sits in site-packages, which holds neither."""
    root = Path(__file__).resolve().parent.parent
    if not ((root / "pyproject.toml").is_file() and (root / "device" / "infer.py").is_file()):
        return None
    shared = root.parent / "shared"
    return shared if shared.is_dir() else None
