"""Output files: written whole or not at all, with one file mode, and errors that name the file.

Runs on: host.

Every file the tools write (.npz, .mpm, .rh, .tflite, CSV logs) goes through a temporary file
in the same folder that is synced and then renamed over the target, so that a crash leaves the
old file or the new one, never part of one. The new file gets the mode a plain `open(path,
"w")` would give it: the existing file's mode when it replaces one, else 0666 minus the umask.
A failure to write is a UserError naming the file asked for, not the temporary one.
"""

import os
import stat
import tempfile
from contextlib import contextmanager

from .errors import UserError


def _new_file_mode(path):
    """The mode `open(path, "w")` would leave: the existing file's, else 0666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def cannot_write(path, e):
    """An OSError while writing `path` -> UserError naming `path` and the reason."""
    reason = e.strerror or str(e) or type(e).__name__
    return UserError("cannot write %s: %s" % (path, reason))


@contextmanager
def replacing(path):
    """Yield a temporary path beside `path` to write; on success it is synced, given the mode
    of a plain new file (see the module) and renamed to `path`; on failure it is removed. An
    OSError becomes a UserError naming `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(
            prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder
        )
    except OSError as e:
        raise cannot_write(path, e) from None
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except OSError as e:
        raise cannot_write(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path, data):
    """Write `data` to `path` whole or not at all (see `replacing`) -> len(data)."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return len(data)
