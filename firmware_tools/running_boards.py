"""The boards `microprop board` serves, so that `auto` and `microprop ports` find them.

Runs on: host.

Each running `microprop board` (virtual or emulated) writes one small JSON file into a per-user
runtime folder, `$MICROPROP_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/microprop`, else
`<tmp>/microprop-<uid>`, and removes it on exit. An entry whose process has ended or whose port
is gone (a killed command) is stale: it is ignored and removed when seen.
"""

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_PREFIX = "board-"


@dataclass(frozen=True)
class RunningBoard:
    """One board a `microprop board` command serves."""

    port: str
    kind: str  # "virtual (unix)", "virtual (cortex-m0)", ...
    pid: int
    started: float  # time.time() at start


def runtime_dir():
    """The per-user folder of the running boards' entries (not created here)."""
    env = os.environ.get("MICROPROP_RUNTIME_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "microprop"
    uid = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    return Path(tempfile.gettempdir()) / ("microprop-%s" % uid)


def register(port, kind):
    """Record a board served by this process; returns the entry's path for `unregister`."""
    folder = runtime_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    entry = {"port": port, "kind": kind, "pid": os.getpid(), "started": time.time()}
    path = folder / ("%s%d-%s.json" % (_PREFIX, os.getpid(), Path(port).name))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, path)  # readers never see half an entry
    return path


def unregister(path):
    """Remove an entry written by `register` (gone already is fine)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def running():
    """The boards being served now, newest first; stale entries are removed."""
    boards = []
    try:
        paths = list(runtime_dir().glob(_PREFIX + "*.json"))
    except OSError:
        return boards
    for path in paths:
        board = _read(path)
        if board is None or not _alive(board):
            unregister(path)
            continue
        boards.append(board)
    return sorted(boards, key=lambda b: b.started, reverse=True)


def _read(path):
    try:
        d = json.loads(path.read_text())
        return RunningBoard(str(d["port"]), str(d["kind"]), int(d["pid"]), float(d["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(board):
    if not os.path.exists(board.port):
        return False
    try:
        os.kill(board.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with this pid: not ours any more
        return False
    return True
