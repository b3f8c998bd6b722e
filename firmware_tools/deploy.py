"""`microprop deploy`: put the device package, the model and the app on a board with mpremote.

Runs on: host.

    microprop deploy /dev/ttyACM0 --model model.mpm --sensor mpu6050 --i2c 0 --scl 5 --sda 4

Steps, each an `mpremote connect PORT ...` subprocess under a timeout:

1. Probe (one `exec`): `sys.implementation._mpy` (mpy version, sub-version, architecture; see
   `firmware_tools/mpy.py`), MicroPython version, free flash, and the size and hash (sha256, or
   binascii.crc32 where hashlib lacks it) of every target file that exists.
2. Build: device modules compiled with mpy-cross, cached by (mpy format, arch, source hash).
   Bytecode-only `.mpy` (no -march) where a module has no native code: it loads on any 6.x
   board. A module with `@micropython.viper` / `native` is compiled for the board's
   architecture when the board's sub-version is mpy-cross's, and shipped as `.py` source
   (compiled on the board at import) when it is not.
3. Copy (one `fs` chain): only files whose size and hash differ; stale `.py`/`.mpy` files in
   /lib/device are removed first (MicroPython imports `x.py` before `x.mpy`).
4. Verify (one `exec`): hash every target file again.
5. Soft reset in the friendly REPL (Ctrl-D, as a terminal would), so main.py starts the app;
   `--no-reset` skips it.

Layout on the board:

    /lib/device/__init__.mpy, fixedpoint.mpy, ...   the device package (kernel_viper: .mpy or .py)
    /main.py                                         device/main.py, as source
    /model.mpm                                       --model
    /model.rh                                        its rehearsal windows, when microprop
                                                     export wrote them beside it (FILE.rh)
    /data.csv                                        --data (sensor log replayed by the app)
    /board.json                                      sensor and app settings from the flags

Before the board is touched, the flags and files are checked, and a bad one is refused with one
line: the board settings by the board's own rules (device/config.py: the values the app would
refuse, the sensor's I2C address and full scales; `--rate` must be the model's), the model and
its rehearsal file, and the sensor log (`_checked_data`): read by the host's reader against the
model (its channels, units, full scales and rate), it is copied as it is when the board's own
replay reader reads the same counts from every row, and otherwise converted to counts (physical
values, a gzipped or quoted file, ...) into the build dir, and that file is copied instead. The
replay sensor needs `--data`.
"""

import binascii
import hashlib
import json
import os
import re
from array import array
from pathlib import Path

from microprop.device import config as board_rules
from microprop.device.sensors import KINDS as SENSORS
from microprop.firmware_tools import mpy, options
from microprop.firmware_tools.mpremote_run import (
    HINT,
    PORT_HELP,
    board_errors,
    board_script,
    mpremote,
    reset_and_say,
    resolve_port,
    soft_reset,  # noqa: F401 (deploy.soft_reset: the demo resets the board after a deploy)
)
from microprop.firmware_tools.serialport import add_port_argument
from microprop.host.errors import UserError

DEVICE_DIR = Path(__file__).resolve().parent.parent / "device"
LIB_DIR = "/lib/device"
MAIN_TARGET = "/main.py"
MODEL_TARGET = "/model.mpm"
REHEARSAL_TARGET = "/model.rh"
DATA_TARGET = "/data.csv"
BOARD_JSON_TARGET = "/board.json"
_FLAGS = {  # board.json key -> the flag that sets it
    "pins": "--pins",
    "i2c": "--i2c",
    "scl": "--scl",
    "sda": "--sda",
    "addr": "--addr",
    "accel_fs_g": "--accel-fs",
    "gyro_fs_dps": "--gyro-fs",
    "rate_hz": "--rate",
    "smoothing": "--smoothing",
    "mount": "--mount",
}

_TIMEOUT = 30.0  # seconds for one mpremote call; for a copy, without progress
_SECONDS_PER_BYTE = 1 / 1000  # copies without a pty (Windows): a slow UART bridge, 1 kB/s
_BLOCK = 4096  # flash block size assumed per file when checking free space


# -- what goes on the board -----------------------------------------------------------------


def is_test_only(name):
    """Device files that stay on the host: test_*.py and *_test.py."""
    return name.startswith("test_") or name.endswith("_test.py")


def package_files(device_dir=None):
    """The device package's modules, sorted: every device/*.py except main.py and tests."""
    return [
        p
        for p in sorted(Path(device_dir or DEVICE_DIR).glob("*.py"))
        if p.name != "main.py" and not is_test_only(p.name)
    ]


def package_json(device_dir=None):
    """The `mpremote mip install` manifest of the device package, as a dict.

    Every device module (main.py included, test-only files not) goes to `device/` under the
    mip target (/lib by default); sources are relative to the manifest, so that both
    `mpremote mip install ./device/package.json` and `github:OWNER/REPO/device/package.json`
    work.
    """
    device_dir = Path(device_dir or DEVICE_DIR)
    names = [p.name for p in sorted(device_dir.glob("*.py")) if not is_test_only(p.name)]
    return {"urls": [["device/" + n, n] for n in names], "version": _project_version()}


def write_package_json(device_dir=None):
    """Rewrite device/package.json from the device files; returns its path."""
    path = Path(device_dir or DEVICE_DIR) / "package.json"
    manifest = package_json(device_dir)
    rows = ",\n".join("        " + json.dumps(pair) for pair in manifest["urls"])
    path.write_text(
        '{\n    "urls": [\n%s\n    ],\n    "version": %s\n}\n'
        % (rows, json.dumps(manifest["version"]))
    )
    return path


def _project_version():
    text = (DEVICE_DIR.parent / "pyproject.toml").read_text()
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    return m.group(1) if m else "0.0.0"


def module_form(native, board, cross_sub):
    """How one module ships: ("mpy", None) bytecode, ("mpy", arch) native, ("py", reason).

    `native`: the module has native code; `board`: the board's mpy.MpyFormat; `cross_sub`:
    the sub-version mpy-cross emits.
    """
    if not native:
        return "mpy", None
    if board.arch is None:
        return "py", "no native emitter on the board"
    if board.sub_version != cross_sub:
        return "py", "board reads mpy 6.%d, mpy-cross emits 6.%d" % (board.sub_version, cross_sub)
    return "mpy", board.arch


def board_config(args, desc=None):
    """The /board.json dict from the flags (keys read by the board app) and the model's sensor
    description `desc` (the MPU6050's channels and full scales), each value checked by the
    board's own rules (device/config.py); UserError naming the flag of a bad one."""
    sensor = args.sensor or "replay"
    if sensor in ("adc", "esp32_adc") and not args.pins:
        raise UserError("deploy: --sensor %s needs --pins, e.g. --pins 26,27" % sensor)
    cfg = {"model": MODEL_TARGET, "sensor": sensor, "rehearsal": REHEARSAL_TARGET}
    if sensor == "replay":
        cfg["file"] = DATA_TARGET
    if args.pins:
        cfg["pins"] = args.pins
    if sensor == "mpu6050" or args.i2c is not None:
        cfg["i2c"] = 0 if args.i2c is None else args.i2c
    for key in ("scl", "sda"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if sensor == "mpu6050" or args.addr is not None:
        cfg["addr"] = 0x68 if args.addr is None else args.addr
    if args.accel_fs is not None:
        cfg["accel_fs_g"] = args.accel_fs
    if args.gyro_fs is not None:
        cfg["gyro_fs_dps"] = args.gyro_fs
    if args.rate is not None:
        cfg["rate_hz"] = int(args.rate) if float(args.rate).is_integer() else args.rate
    cfg["smoothing"] = args.smoothing
    if args.mount is not None:
        cfg["mount"] = args.mount
    cfg["realtime"] = not args.no_realtime
    if sensor == "mpu6050" and desc:
        _mpu6050_as_the_model(cfg, desc)
    for key, value in cfg.items():
        expected = board_rules.check_value(key, value, sensor)
        if expected:
            if isinstance(value, list):
                value = ",".join(str(v) for v in value)
            raise UserError(
                "deploy: %s %s: expected %s (board.json %s)"
                % (_FLAGS.get(key, key), value, expected, key)
            )
    return cfg


def _mpu6050_as_the_model(cfg, desc):
    """Set the MPU6050's channels and full scales to the model's (the board refuses a sensor
    that differs from its model); UserError where the chip cannot give what the model reads
    or a flag asks for another full scale."""
    from microprop.device import sensor_mpu6050 as mpu

    names = list(desc["channels"])
    if not names or any(c not in mpu.CHANNELS for c in names):
        raise UserError(
            "deploy: --sensor mpu6050 gives channels %s; the model reads %s"
            % (",".join(mpu.CHANNELS), ",".join(names))
        )
    if names != list(mpu.CHANNELS):
        cfg["channels"] = names
    units = desc.get("units") or [""] * len(names)
    scales = desc.get("full_scale") or [0] * len(names)
    for kind, unit, key, flag in (
        ("a", "g", "accel_fs_g", "--accel-fs"),
        ("g", "dps", "gyro_fs_dps", "--gyro-fs"),
    ):
        mine = [k for k, c in enumerate(names) if c[0] == kind]
        bad = [names[k] + " in " + units[k] for k in mine if units[k] and units[k] != unit]
        if bad:
            raise UserError(
                "deploy: --sensor mpu6050 reads %s in %s; the model reads %s"
                % (kind + "x..", unit, ", ".join(bad))
            )
        found = sorted({scales[k] for k in mine if scales[k]})
        if len(found) > 1:
            raise UserError(
                "deploy: the model's %s channels have full scales %s; the MPU6050 has one"
                % (unit, ", ".join("%g" % v for v in found))
            )
        if not found:
            continue
        fs = int(found[0]) if float(found[0]).is_integer() else found[0]
        allowed = mpu.ACCEL_FS_G if kind == "a" else mpu.GYRO_FS_DPS
        if fs not in allowed:
            raise UserError(
                "deploy: the model was trained at %g %s full scale; the MPU6050 has %s"
                % (fs, unit, ", ".join(str(v) for v in allowed))
            )
        if key in cfg and cfg[key] != fs:
            raise UserError(
                "deploy: %s %s: the model was trained at %g %s full scale; leave %s out to "
                "use it" % (flag, cfg[key], fs, unit, flag)
            )
        cfg[key] = fs


class Item:
    """One file for the board: where it goes, where its bytes are, and what it is."""

    def __init__(self, target, local, note):
        self.target = target
        self.local = Path(local)
        self.note = note
        data = self.local.read_bytes()
        self.size = len(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.crc32 = "%08x" % (binascii.crc32(data) & 0xFFFFFFFF)

    def digest(self, algo):
        return {"sha256": self.sha256, "crc32": self.crc32}.get(algo)


def build(args, board, build_dir, data=None):
    """The board's files as a list of Items (compiling what needs compiling); `data`: the
    (file, note) of `checked_inputs`, else --data is checked here."""
    items = []
    cross_sub = mpy.mpy_cross_version()[1] if not args.source else None
    for src in package_files():
        if args.source:
            form, how = "py", "source (--source)"
        else:
            native = mpy.has_native_code(src.read_text())
            form, how = module_form(native, board, cross_sub)
        if form == "py":
            items.append(Item("%s/%s" % (LIB_DIR, src.name), src, how))
        else:
            out = mpy.compile_file(src, build_dir, how, "device/" + src.name)
            note = "native " + how if how else "bytecode"
            items.append(Item("%s/%s.mpy" % (LIB_DIR, src.stem), out, note))
    if args.model:
        items.append(Item(MODEL_TARGET, _checked_model(args.model), "model"))
        rehearsal = _checked_rehearsal(args.model)
        if rehearsal:
            items.append(Item(REHEARSAL_TARGET, rehearsal, "rehearsal windows"))
    if args.data:
        data = data or checked_inputs(args, build_dir)[1]
        items.append(Item(DATA_TARGET, data[0], data[1]))
    items.append(Item(BOARD_JSON_TARGET, _write_board_json(args, build_dir), "settings"))
    main = DEVICE_DIR / "main.py"
    if main.exists():
        items.append(Item(MAIN_TARGET, main, "app entry"))
    return items


def _existing(path, flag):
    p = Path(path)
    if not p.is_file():
        raise UserError("deploy: %s %s: no such file" % (flag, path))
    return p


def _checked_model(path):
    from microprop.device import modelfile

    p = _existing(path, "--model")
    try:
        modelfile.decode(p.read_bytes())
    except ValueError as e:
        raise UserError(
            "deploy: %s is not a model file microprop export wrote: %s" % (path, e)
        ) from None
    return p


def checked_inputs(args, build_dir):
    """The flags and files checked before the board is touched: (the model's sensor
    description or None, the (file, note) to copy as /data.csv or None); UserError (one
    line) for the first bad one."""
    desc = model_sensor(args)
    cfg = board_config(args, desc)
    if args.model:
        _checked_rehearsal(args.model)
        want = desc["rate_mhz"]
        if args.rate is not None and want and int(args.rate * 1000 + 0.5) != want:
            raise UserError(
                "deploy: --rate %s: the model was trained at %s Hz; leave --rate out to use its "
                "rate" % (cfg["rate_hz"], board_rules.hz(want))
            )
    if cfg["sensor"] == "replay" and not args.data:
        raise UserError(
            "deploy: the replay sensor needs --data FILE.csv, the sensor log the board replays "
            "(or --sensor for a hardware sensor)"
        )
    data = _checked_data(args.data, desc, build_dir) if args.data else None
    return desc, data


def _checked_data(path, desc, build_dir):
    """--data as the board's replay sensor reads it: (file to copy, note); UserError why not.

    The host's reader (host/sensorlog.py) reads it against the model's sensor description
    `desc` (None without --model): the model's channels, integer counts or physical values
    with a full scale (the model's, else the file's), units, full scales and rate as the
    model's. The file is copied as it is when the board's own reader reads the same counts
    from every row (`_board_reads`); else its counts go to a sensor log written into the build
    dir, which is copied instead.
    """
    from microprop.host import sensorlog
    from microprop.host.errors import UserError

    p = _existing(path, "--data")
    channels = list(desc["channels"]) if desc else None
    try:
        table = sensorlog.read_sensor_table(p, channels)
        physical = _physical_full_scale(table, desc)
        log = sensorlog.log_from_table(table, physical)
    except UserError as e:
        if e.column in (channels or ()) and "unknown channel" in str(e):
            raise UserError(
                "deploy: --data %s has no column %r; the model reads %s"
                % (path, e.column, ", ".join(channels))
            ) from None
        raise UserError("deploy: --data %s%s" % (e, _physical_hint(e, desc))) from None
    _check_against_model(path, log, physical, desc)
    if not physical and _board_reads(p, log, desc):
        return p, "replay data"
    if desc:
        scales = {}
        for ch, unit, fs in zip(desc["channels"], desc["units"], desc["full_scale"], strict=True):
            if fs:
                scales[ch] = (fs, unit)
        log.full_scale = scales or log.full_scale
        log.rate_hz = desc["rate_mhz"] / 1000 if desc["rate_mhz"] else log.rate_hz
    folder = Path(build_dir) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "converting.csv"
    sensorlog.write_sensor_log(out, log)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()[:16]
    out = out.replace(folder / ("data-%s.csv" % digest))
    if not _board_reads(out, log, desc):
        raise UserError(
            "deploy: --data %s: the board's replay reader cannot read it even converted to "
            "counts (rows longer than it reads?)" % path
        )
    return out, "replay data, converted to counts" if physical else "replay data, rewritten"


def _physical_hint(error, desc):
    """For cells that are no counts: how to declare physical values."""
    if "expected int16 counts" not in str(error):
        return ""
    if desc and all(desc["full_scale"]):
        from microprop.host.sensorlog import format_full_scale

        scales = zip(desc["channels"], desc["full_scale"], desc["units"], strict=True)
        return "; physical values? make `# values=physical` its first line (converted at the " + (
            "model's full scale %s)" % format_full_scale({ch: (fs, u) for ch, fs, u in scales})
        )
    return "; physical values? make `# values=physical full_scale=ax:8g,...` its first line"


def _physical_full_scale(table, desc):
    """channel -> (full scale, unit) to turn physical values into counts; None for counts."""
    from microprop.host import sensorlog
    from microprop.host.errors import UserError

    meta = table.meta
    if meta.get("values") != "physical":
        return None
    declared = (
        sensorlog.parse_full_scale(meta["full_scale"], table.path)
        if meta.get("full_scale")
        else {}
    )
    out = {}
    for k, ch in enumerate(table.channels):
        fs = desc["full_scale"][k] if desc else 0
        unit = declared.get(ch, (0, ""))[1]
        if fs:  # the counts the model reads: at its full scale, in the file's unit if stated
            out[ch] = (fs, unit or desc["units"][k])
        elif ch in declared:
            out[ch] = declared[ch]
        else:
            raise UserError(
                "sensor log: values=physical but no full scale for %r (declare it in the first "
                "line, e.g. full_scale=%s:8g)" % (ch, ch),
                path=table.path,
                row=1,
            )
    return out


def _check_against_model(path, log, physical, desc):
    """Units, full scales (of counts) and rate of `log` as the model's, where both state them."""
    if not desc:
        return
    declared = log.full_scale or {}
    for ch, unit, fs in zip(desc["channels"], desc["units"], desc["full_scale"], strict=True):
        have_fs, have_unit = declared.get(ch, (0, ""))
        if physical:
            have_fs, have_unit = 0, physical[ch][1]
        if have_unit and unit and have_unit != unit:
            raise UserError(
                "deploy: --data %s: channel %s in %s, the model reads %s"
                % (path, ch, have_unit, unit)
            )
        if have_fs and fs and abs(have_fs - fs) > 1e-4 * fs:
            raise UserError(
                "deploy: --data %s: channel %s recorded at full scale %g%s, the model reads %g%s"
                % (path, ch, have_fs, have_unit, fs, unit)
            )
    want = desc["rate_mhz"]
    if log.rate_hz and want and abs(log.rate_hz * 1000 - want) > 0.5:
        raise UserError(
            "deploy: --data %s: recorded at %s Hz, the model at %s Hz"
            % (path, "%g" % log.rate_hz, board_rules.hz(want))
        )


def _board_reads(path, log, desc):
    """True when the board's replay reader (device/sensor_replay.py, run here) accepts `path`
    for the model `desc` and reads every row of `log` as the host did, and nothing else."""
    import numpy as np

    from microprop.device.sensor_replay import Replay
    from microprop.device.sensors import check_model

    try:
        replay = Replay(str(path), log.channels if desc else None)
    except (OSError, ValueError):  # UnicodeError is a ValueError
        return False
    try:
        if desc:
            check_model(replay, desc)
        if list(replay.channels) != list(log.channels):
            return False
        out = array("h", bytes(2 * replay.n))
        got = array("h")
        for _ in range(len(log)):
            replay.read(out)
            got.extend(out)
        replay.read(out)  # the first row again: the pass held exactly these rows
        if replay.bad_rows or replay.loops != 1:
            return False
        return np.array_equal(np.frombuffer(got, np.int16).reshape(log.counts.shape), log.counts)
    except (OSError, ValueError):
        return False
    finally:
        replay.close()


def _checked_rehearsal(model_path):
    """The rehearsal file export wrote beside the model (FILE.rh), checked, or None."""
    from microprop.device.checkpoint import model_crc_of
    from microprop.host import rehearsal

    p = Path(rehearsal.path_for(model_path))
    if not p.is_file():
        return None
    try:
        rehearsal.from_bytes(p.read_bytes(), model_crc_of(str(model_path)))
    except ValueError as e:
        raise UserError(
            "deploy: %s beside the model is not its rehearsal file (%s); export the model "
            "again or remove it" % (p, e)
        ) from None
    return p


def model_sensor(args):
    """The sensor description of --model (checked), or None without one."""
    if not args.model:
        return None
    from microprop.device import modelfile

    return modelfile.decode(_checked_model(args.model).read_bytes())["sensor"]


def _write_board_json(args, build_dir):
    text = json.dumps(board_config(args, model_sensor(args)), indent=1, sort_keys=True) + "\n"
    folder = Path(build_dir) / "json"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("board-%s.json" % hashlib.sha256(text.encode()).hexdigest()[:16])
    path.write_text(text)
    return path


# -- talking to the board -------------------------------------------------------------------


class BoardState:
    """What the probe found: format, versions, free flash and the files present."""

    def __init__(self, mpy_value, free, algo, platform, version, files=None, dirs=()):
        self.mpy_value = mpy_value
        self.free = free
        self.algo = algo
        self.platform = platform
        self.version = version
        self.files = files or {}  # path -> (size, hash)
        self.dirs = set(dirs)  # which of /lib and /lib/device exist


def probe_script(root_files):
    """firmware_tools/board_scripts/deploy_probe.py, for `root_files` and LIB_DIR."""
    return board_script("deploy_probe", list(root_files), LIB_DIR)


def parse_probe(text):
    """mpremote exec output of the probe -> BoardState."""
    info = None
    files = {}
    dirs = []
    for line in text.splitlines():
        parts = line.strip().split(" ", 3)
        if parts[0] == "I" and len(parts) == 4:
            rest = parts[3].split(" ")
            if len(rest) == 3:
                info = (int(parts[1]), int(parts[2]), rest[0], rest[1], rest[2])
        elif parts[0] == "H" and len(parts) == 4:
            files[parts[3]] = (int(parts[1]), parts[2])
        elif parts[0] == "D" and len(parts) == 2:
            dirs.append(parts[1])
    if info is None:
        text = " ".join(text.split())[-200:]
        raise UserError("deploy: the board did not answer the probe: %r (%s)" % (text, HINT))
    return BoardState(*info, files=files, dirs=dirs)


def probe(port, root_files, timeout):
    out = mpremote(port, ["exec", probe_script(root_files)], "reading the board", timeout)
    return parse_probe(out)


# -- the command ----------------------------------------------------------------------------


def board_format(state):
    """The board's mpy.MpyFormat from the probe; UserError where .mpy files will not load."""
    if state.mpy_value < 0:
        raise UserError(
            "deploy: the board cannot load .mpy files (no sys.implementation._mpy); "
            "deploy with --source"
        )
    try:
        fmt = mpy.decode_mpy(state.mpy_value)
    except UserError as e:
        raise UserError("deploy: %s; deploy with --source" % e) from None
    if fmt.version != mpy.MPY_VERSION:
        raise UserError(
            "deploy: the board reads .mpy version %d, expected %d (MicroPython 1.19 or later); "
            "update its firmware or deploy with --source" % (fmt.version, mpy.MPY_VERSION)
        )
    return fmt


def _fake_format(args):
    version, sub = mpy.mpy_cross_version()
    if args.mpy_version:
        m = re.fullmatch(r"(\d+)\.(\d)", args.mpy_version)
        if not m:
            raise UserError(
                "deploy: bad --mpy-version %r, expected like 6.2 or 6.3" % args.mpy_version
            )
        version, sub = int(m.group(1)), int(m.group(2))
    if version != mpy.MPY_VERSION:
        raise UserError("deploy: --mpy-version %s, expected 6.x" % args.mpy_version)
    return mpy.MpyFormat(version, sub, args.arch)


def plan(items, state):
    """(to copy, unchanged, stale paths to remove) against what the board holds."""
    copy, same = [], []
    for item in items:
        have = state.files.get(item.target) if state else None
        digest = item.digest(state.algo) if state else None
        if have and digest and have == (item.size, digest):
            same.append(item)
        else:
            copy.append(item)
    targets = {item.target for item in items}
    stale = []
    if state:
        stale = sorted(
            p
            for p in state.files
            if p.startswith(LIB_DIR + "/") and p not in targets and p.endswith((".py", ".mpy"))
        )
    return copy, same, stale


def _check_space(copy, stale, state):
    def blocks(n):
        return -(-n // _BLOCK) * _BLOCK

    need = sum(blocks(i.size) for i in copy)
    freed = sum(blocks(state.files[i.target][0]) for i in copy if i.target in state.files)
    freed += sum(blocks(state.files[p][0]) for p in stale)
    if need - freed > state.free:
        raise UserError(
            "deploy: not enough flash: %d bytes to write, %d free (%d freed by replaced files)"
            % (need, state.free, freed)
        )


def _fs_chain(copy, stale, state):
    """mpremote arguments: mkdirs, removals and copies, `+`-separated, in one connection."""
    args = []
    for folder in ("/lib", LIB_DIR):
        if folder not in state.dirs and any(i.target.startswith(folder + "/") for i in copy):
            args += ["fs", "mkdir", ":" + folder, "+"]
    for path in stale:
        args += ["fs", "rm", ":" + path, "+"]
    for item in copy:
        args += ["fs", "cp", str(item.local), ":" + item.target, "+"]
    return args[:-1]


def _verify(port, items, timeout):
    roots = [i.target for i in items if not i.target.startswith(LIB_DIR + "/")]
    state = probe(port, roots, timeout)
    for item in items:
        have = state.files.get(item.target)
        want = (item.size, item.digest(state.algo) if state.algo != "none" else None)
        if have is None or (want[1] is not None and have != want) or have[0] != item.size:
            raise UserError(
                "deploy: verify failed for %s: expected %d bytes %s, found %s; deploy again"
                % (item.target, item.size, want[1] or "", "%d bytes %s" % have if have else "none")
            )
    return state


def install(port, items, copy, stale, state, timeout, what="copying"):
    """Copy `copy` and remove `stale` (plan's lists) in one fs chain, then verify every item;
    the board's state after. A copy's `timeout` bounds the time without progress on a pty,
    else the whole copy, with time for its bytes."""
    _check_space(copy, stale, state)
    if copy or stale:
        chain = _fs_chain(copy, stale, state)
        stall = os.name == "posix"
        limit = timeout if stall else timeout + sum(i.size for i in copy) * _SECONDS_PER_BYTE
        mpremote(port, chain, what, limit, stall=stall)
    return _verify(port, items, timeout)


def _print_items(copy, same, stale, dry_run):
    verb = "would copy" if dry_run else "copy"
    rows = [(verb, i.target, "%d bytes, %s" % (i.size, i.note)) for i in copy]
    rows += [("unchanged", i.target, "%d bytes, %s" % (i.size, i.note)) for i in same]
    rows += [("would remove" if dry_run else "remove", p, "stale") for p in stale]
    width = max(len(r[1]) for r in rows) if rows else 0
    for action, target, note in rows:
        print("  %-12s %-*s  %s" % (action, width, target, note))


def run(args):
    """`microprop deploy`: returns 0, or raises UserError (one line)."""
    with board_errors("deploy"):
        return _deploy(args)


def _deploy(args):
    build_dir = Path(args.build_dir or default_build_dir())
    timeout = args.timeout
    port = args.port
    if args.arch and not args.dry_run:
        raise UserError(
            "deploy: --arch is for --dry-run only (a deploy reads the arch from the board)"
        )
    _, data = checked_inputs(args, build_dir)  # before the board is touched
    root_files = [MODEL_TARGET, REHEARSAL_TARGET, DATA_TARGET, BOARD_JSON_TARGET, MAIN_TARGET]
    state = None
    if args.arch:
        fmt = _fake_format(args)
        print("--- dry run for mpy %d.%d %s (no board read)" % (fmt[0], fmt[1], fmt.arch))
    else:
        port = resolve_port(port)
        state = probe(port, root_files, timeout)
        fmt = board_format(state) if not args.source else None
        print(
            "--- board %s: MicroPython %s (%s), mpy %s%s, %d bytes free"
            % (
                port,
                state.version,
                state.platform,
                "%d.%d " % (fmt[0], fmt[1]) if fmt else "",
                (fmt.arch or "no native emitter") if fmt else "(--source)",
                state.free,
            )
        )
    try:
        items = build(args, fmt, build_dir, data)
    except UserError as e:
        raise UserError("deploy: %s" % e) from None
    copy, same, stale = plan(items, state)
    _print_items(copy, same, stale, args.dry_run)
    n_bytes = sum(i.size for i in copy)
    if args.dry_run:
        print(
            "dry run: %d would be copied (%d bytes), %d unchanged, %d would be removed"
            % (len(copy), n_bytes, len(same), len(stale))
        )
        return 0
    after = install(port, items, copy, stale, state, timeout)
    print(
        "deployed: %d copied (%d bytes), %d unchanged, %d removed; verified by %s; "
        "flash free %d bytes" % (len(copy), n_bytes, len(same), len(stale), after.algo, after.free)
    )
    if not args.no_reset:
        reset_and_say(port)
    return 0


def default_build_dir():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "microprop", "build")


# -- options --------------------------------------------------------------------------------


def _int_any_base(text):
    import argparse

    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected an integer like 0x68, found %r" % text
        ) from None


def add_arguments(parser):
    """Options of `microprop deploy`."""
    add_port_argument(parser, PORT_HELP)
    parser.add_argument("--model", metavar="FILE.mpm", help="model file, copied as /model.mpm")
    parser.add_argument("--data", metavar="FILE.csv", help="sensor log to replay, as /data.csv")
    g = parser.add_argument_group("board settings (written to /board.json)")
    g.add_argument("--sensor", choices=SENSORS, help="sensor the app reads (default: replay)")
    g.add_argument("--pins", type=options.pins, help="ADC pins, e.g. 26,27")
    g.add_argument("--i2c", type=int, help="I2C bus id (mpu6050; default 0)")
    g.add_argument("--scl", type=int, help="I2C SCL pin")
    g.add_argument("--sda", type=int, help="I2C SDA pin")
    g.add_argument("--addr", type=_int_any_base, help="I2C address (mpu6050; default 0x68)")
    g.add_argument("--accel-fs", type=int, metavar="G", help="accelerometer full scale in g")
    g.add_argument("--gyro-fs", type=int, metavar="DPS", help="gyroscope full scale in deg/s")
    g.add_argument("--rate", type=float, metavar="HZ", help="sample rate (default: the model's)")
    g.add_argument("--smoothing", type=int, default=1, help="majority of the last N windows (1)")
    g.add_argument(
        "--mount",
        metavar="ORIENTATION",
        help="the sensor's mount, each axis the model sees from the sensor's, e.g. "
        "--mount=-y+x+z (a quarter turn about z; with '=', as it starts with '-'); default "
        "+x+y+z. microprop teach --find-mount finds it",
    )
    g.add_argument("--no-realtime", action="store_true", help="replay data as fast as possible")
    g = parser.add_argument_group("deploy")
    g.add_argument(
        "--dry-run", action="store_true", help="show what would be copied, copy nothing"
    )
    g.add_argument("--no-reset", action="store_true", help="no soft reset at the end")
    g.add_argument("--source", action="store_true", help="copy .py source, compile nothing")
    g.add_argument("--build-dir", metavar="DIR", help="cache of compiled .mpy files")
    g.add_argument(
        "--timeout",
        type=float,
        default=_TIMEOUT,
        metavar="S",
        help="seconds per mpremote call, more for large copies (%(default)s)",
    )
    g.add_argument(
        "--arch",
        choices=[a for a in mpy.ARCHS if a],
        help="with --dry-run: build for this architecture without reading a board (testing)",
    )
    g.add_argument(
        "--mpy-version",
        metavar="6.N",
        help="with --arch: the board's .mpy version (default: what mpy-cross emits)",
    )
