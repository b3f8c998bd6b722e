// Run a Python script on the 32-bit MicroPython WebAssembly port, with microprop's device
// package importable.
//
// Runs on: host (Node.js >= 18), for the tests (tests/wasm_runner.py drives it).
//
// The port's small ints end at 2**30 - 1, like those of ESP32 and RP2040, so a value that
// leaves the 31-bit range needs a heap-allocated big int, and under micropython.heap_lock()
// that allocation raises MemoryError. The port has no viper (a viper decorator is a
// SyntaxError when the module is compiled).
//
// Usage:
//   node tests/wasm/run.mjs [options] SCRIPT.py [ARG ...]
//
// Options:
//   --heapsize N[k|m]    MicroPython heap size passed to the port (default 1m)
//   --package DIR        copy the package folder DIR (its .py/.mpy/.json files) to /lib/NAME
//                        in the VM; repeatable; default: the project's device/ folder
//   --put HOST=VM        copy the host file HOST to the absolute path VM inside the VM
//                        (folders are made); repeatable
//   --stdin              feed this process's stdin to the VM's sys.stdin
//
// The script's stdout goes to stdout. sys.argv is [SCRIPT, ARG ...]. Exit status: 0 on
// success, 1 with the Python traceback on stderr when the script raises, N for SystemExit(N),
// 2 for a usage error.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript/micropython.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const PACKAGE_SUFFIXES = [".py", ".mpy", ".json"];

function usage(message) {
  process.stderr.write(`run.mjs: ${message}\n`);
  process.stderr.write("usage: node run.mjs [--heapsize N] [--package DIR] [--put HOST=VM] ");
  process.stderr.write("[--stdin] SCRIPT.py [ARG ...]\n");
  process.exit(2);
}

function parseSize(text) {
  const m = /^(\d+)([kKmM]?)$/.exec(text);
  if (!m) usage(`bad heap size ${JSON.stringify(text)}, expected e.g. 65536, 64k or 1m`);
  const unit = { "": 1, k: 1024, m: 1048576 }[m[2].toLowerCase()];
  return parseInt(m[1], 10) * unit;
}

function parseArgs(argv) {
  const opts = { heapsize: 1048576, packages: [], puts: [], stdin: false, script: null, args: [] };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--heapsize") opts.heapsize = parseSize(value());
    else if (a === "--package") opts.packages.push(path.resolve(value()));
    else if (a === "--put") {
      const v = value();
      const eq = v.lastIndexOf("=");
      if (eq <= 0 || !v.slice(eq + 1).startsWith("/")) {
        usage(`bad --put ${JSON.stringify(v)}, expected HOST=/absolute/vm/path`);
      }
      opts.puts.push([v.slice(0, eq), v.slice(eq + 1)]);
    } else if (a === "--stdin") opts.stdin = true;
    else if (a === "--") {
      i++;
      break;
    } else if (a.startsWith("--")) usage(`unknown option ${a}`);
    else break;
  }
  if (i >= argv.length) usage("no script given");
  opts.script = argv[i];
  opts.args = argv.slice(i + 1);
  if (opts.packages.length === 0) opts.packages.push(path.join(ROOT, "device"));
  return opts;
}

// Make every folder of the absolute VM path `dir`.
function makeDirs(FS, dir) {
  let cur = "";
  for (const part of dir.split("/").filter(Boolean)) {
    cur += "/" + part;
    if (!FS.analyzePath(cur).exists) FS.mkdir(cur);
  }
}

function copyPackage(FS, hostDir, vmDir) {
  makeDirs(FS, vmDir);
  for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
    const src = path.join(hostDir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== "__pycache__") copyPackage(FS, src, `${vmDir}/${entry.name}`);
    } else if (PACKAGE_SUFFIXES.some((s) => entry.name.endsWith(s))) {
      FS.writeFile(`${vmDir}/${entry.name}`, fs.readFileSync(src));
    }
  }
}

// Collects the VM's output bytes and writes them in large chunks (the port calls back per byte).
function byteSink(stream) {
  let chunks = [];
  let size = 0;
  const flush = () => {
    if (size) stream.write(Buffer.concat(chunks));
    chunks = [];
    size = 0;
  };
  const write = (bytes) => {
    chunks.push(Buffer.from(bytes));
    size += bytes.length;
    if (size >= 65536) flush();
  };
  return { write, flush };
}

function stdinReader() {
  const data = fs.readFileSync(0);
  let pos = 0;
  return () => (pos < data.length ? data[pos++] : null);
}

// The script runs inside this wrapper: it compiles the script under its own file name (so
// tracebacks name it), and on any exception releases micropython.heap_lock() before the
// exception leaves Python, since the port needs the heap to turn it into a JS error.
const WRAPPER = `
def _run(path, argv):
    import sys, micropython
    sys.argv[:] = argv
    with open(path) as f:
        code = compile(f.read(), path, "exec")
    try:
        exec(code, {"__name__": "__main__", "__file__": path})
    except BaseException as e:
        while micropython.heap_unlock():
            pass
        if isinstance(e, SystemExit):
            code = e.args[0] if e.args else 0
            if code is None or isinstance(code, int):
                return code or 0
            print(code, file=sys.stderr)
            return 1
        sys.print_exception(e, sys.stderr)
        return 1
    return 0
`;

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(opts.script)) usage(`no such script ${opts.script}`);
  const out = byteSink(process.stdout);
  const err = byteSink(process.stderr);
  const config = {
    heapsize: opts.heapsize,
    linebuffer: false,
    stdout: out.write,
    stderr: err.write,
  };
  if (opts.stdin) config.stdin = stdinReader();
  const mp = await loadMicroPython(config);
  const FS = mp.FS;
  for (const pkg of opts.packages) {
    if (!fs.existsSync(pkg)) usage(`no such package folder ${pkg}`);
    copyPackage(FS, pkg, `/lib/${path.basename(pkg)}`);
  }
  for (const [host, vm] of opts.puts) {
    if (!fs.existsSync(host)) usage(`no such file ${host}`);
    makeDirs(FS, path.posix.dirname(vm));
    FS.writeFile(vm, fs.readFileSync(host));
  }
  const vmScript = `/run/${path.basename(opts.script)}`;
  makeDirs(FS, "/run");
  FS.writeFile(vmScript, fs.readFileSync(opts.script));
  FS.chdir("/run");
  let status;
  try {
    mp.runPython(WRAPPER);
    const argv = JSON.stringify([opts.script, ...opts.args]);
    mp.runPython(`_status = _run(${JSON.stringify(vmScript)}, ${argv})`);
    status = mp.globals.get("_status");
  } catch (e) {
    // Only reached when the wrapper itself fails (e.g. a MemoryError while printing).
    out.flush();
    err.write(new TextEncoder().encode(`run.mjs: ${e.type || e.name}: ${e.message}\n`));
    status = 1;
  }
  out.flush();
  err.flush();
  process.exitCode = status;
}

await main();
