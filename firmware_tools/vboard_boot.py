"""Boot shim of the virtual board: a board's filesystem, `machine.reset`, boot.py and main.py.

Runs on: the virtual board (MicroPython Unix port). `virtualboard.py` passes this file's text
to the VM as `-c` code, with `-i` so that the REPL starts when it returns; it is never imported
on the host.

- The board folder (the VM's working directory) becomes `/`: paths never leave it, `..` stops
  at `/`, and `os.ilistdir` gives file sizes as littlefs does.
- The flash has a size (`VBOARD_FLASH`: bytes and block size, from the supervisor):
  `os.statvfs` reports it, and as free the blocks the board folder's files leave (each file
  takes whole blocks, each folder one). A write that needs more blocks than are free raises
  OSError(ENOSPC) and writes nothing, as littlefs does on a full flash.
- `sys.path` is a board's: `''`, `.frozen`, `/lib`.
- `machine.reset()` asks the supervisor for a hard reset; the rest of `machine` is the port's.
- boot.py runs; main.py runs only in the friendly REPL and only if boot.py did not raise.
- A SystemExit from boot.py or main.py is a soft reset, as on a board.

It talks to the supervisor with markers `DLE vboard-<word> DLE` on stdout, which the supervisor
removes: `up` (the VM runs Python, Ctrl-C works), `done` (boot over, the REPL comes next),
`soft` and `hard` (reset requests). DLE (0x10), not NUL: no REPL or mpremote protocol uses it,
while NUL ends many of mount's requests (a little-endian length), and output that could start a
marker is held by the supervisor until the marker's rest comes or a short quiet time passes.
"""


def _vboard_boot(env):
    import io
    import os
    import sys

    import micropython
    import vfs

    def mark(word):
        sys.stdout.write("\x10vboard-%s\x10" % word)  # one write: its rest follows at once

    def n_bytes(buf):
        if isinstance(buf, str):
            return len(buf.encode())
        if isinstance(buf, (bytes, bytearray)):
            return len(buf)
        return len(bytes(buf))  # an array or memoryview: its items may be wider than a byte

    class FlashFile(io.IOBase):
        """A file open for writing that cannot grow past the free blocks; else the file."""

        def __init__(self, fs, f, size, append):
            self._fs = fs
            self._f = f
            self._size = size
            self._append = append

        def write(self, buf):
            end = (self._size if self._append else self._f.tell()) + n_bytes(buf)
            b = self._fs.block
            grow = (end + b - 1) // b - (self._size + b - 1) // b
            if grow > 0 and grow > self._fs.free_blocks():
                raise OSError(28)  # ENOSPC, as littlefs
            n = self._f.write(buf)
            self._size = max(self._size, self._f.tell())
            return n

        def readinto(self, buf):
            return self._f.readinto(buf)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __iter__(self):
            return self._f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    class FlashFS:
        """The board folder as a filesystem mounted at `/`, confined to that folder, on a flash
        of `size` bytes in blocks of `block` bytes."""

        def __init__(self, root, size, block):
            self._fs = vfs.VfsPosix(root)
            self._cwd = "/"
            self.block = block
            self.blocks = size // block

        def _abs(self, path):
            if not path.startswith("/"):
                path = self._cwd + "/" + path
            parts = []
            for part in path.split("/"):
                if part == "..":
                    if parts:
                        parts.pop()
                elif part and part != ".":
                    parts.append(part)
            return "/" + "/".join(parts)

        def __repr__(self):
            return "<FlashFS>"

        def mount(self, readonly, mkfs):
            pass

        def umount(self):
            pass

        def chdir(self, path):
            path = self._abs(path)
            if not self._fs.stat(path)[0] & 0x4000:
                raise OSError(20)  # ENOTDIR
            self._cwd = path

        def getcwd(self):
            return self._cwd

        def ilistdir(self, path):
            path = self._abs(path)
            prefix = path if path.endswith("/") else path + "/"
            for entry in self._fs.ilistdir(path):
                size = 0
                if entry[1] != 0x4000:
                    size = self._fs.stat(prefix + entry[0])[6]
                yield (entry[0], entry[1], entry[2], size)

        def stat(self, path):
            return self._fs.stat(self._abs(path))

        def used_blocks(self):
            """Blocks the files take (each rounded up to whole blocks) plus one per folder."""
            used = 0
            todo = ["/"]
            while todo:
                folder = todo.pop()
                prefix = folder if folder.endswith("/") else folder + "/"
                for entry in self._fs.ilistdir(folder):
                    path = prefix + entry[0]
                    if entry[1] == 0x4000:
                        used += 1
                        todo.append(path)
                        continue
                    try:
                        used += (self._fs.stat(path)[6] + self.block - 1) // self.block
                    except OSError:  # gone meanwhile, or a dangling link
                        pass
            return used

        def free_blocks(self):
            return max(0, self.blocks - self.used_blocks())

        def statvfs(self, path):
            free = self.free_blocks()  # like littlefs, for any path
            return (self.block, self.block, self.blocks, free, free, 0, 0, 0, 0, 255)

        def open(self, path, mode):
            path = self._abs(path)
            f = self._fs.open(path, mode)
            if "r" in mode and "+" not in mode:
                return f
            return FlashFile(self, f, self._fs.stat(path)[6], "a" in mode)

        def mkdir(self, path):
            self._fs.mkdir(self._abs(path))

        def rmdir(self, path):
            self._fs.rmdir(self._abs(path))

        def remove(self, path):
            self._fs.remove(self._abs(path))

        def rename(self, old, new):
            self._fs.rename(self._abs(old), self._abs(new))

    class Machine:
        """The port's `machine` module plus `reset()`, which the Unix port lacks."""

        def __init__(self, machine):
            self._machine = machine

        def __getattr__(self, name):
            return getattr(self._machine, name)

        def reset(self):
            mark("hard")
            sys.exit(90)  # the supervisor reads exit status 90 as a hard reset too

    def run(name):
        """Run a boot file like a board: True if it is missing or ran to the end."""
        try:
            os.stat(name)
        except OSError:
            return True
        try:
            with open(name) as f:
                code = compile(f.read(), name, "exec")
            exec(code, env)
            return True
        except SystemExit:
            mark("soft")
            raise
        except BaseException as e:  # KeyboardInterrupt included, as a board shows it
            buf = io.StringIO()
            sys.print_exception(e, buf)
            for line in buf.getvalue().split("\n"):
                if line and '"<stdin>"' not in line:  # the shim's own frame
                    print(line)
            return False

    root = os.getcwd()
    size, block = (os.getenv("VBOARD_FLASH") or "2097152 4096").split()
    vfs.umount("/")
    vfs.mount(FlashFS(root, int(size), int(block)), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    import machine

    sys.modules["machine"] = Machine(machine)
    # A Ctrl-C may come as SIGINT any time after `up` (held host input is given to the VM then):
    # it ends boot.py or main.py, never the shim, which must reach `done`.
    booting = True
    while True:
        try:
            if booting:
                booting = False
                mark("up")
                if run("boot.py") and os.getenv("VBOARD_RAW") != "1":
                    run("main.py")
            micropython.kbd_intr(-1)  # from here on, Ctrl-C reaches the REPL as a byte
            break
        except SystemExit:
            while True:  # the supervisor ends this VM
                pass
        except KeyboardInterrupt:
            pass
    mark("done")


_vboard_boot(globals())
del _vboard_boot
