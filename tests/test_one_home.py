"""One home for the facts the board and the host share: each table and magic value is written
once, in device/, and imported everywhere else (CONVENTIONS.md, convention 2).

Runs on: host (pytest).

The guard scans device/, host/, firmware_tools/ and bench/ for a literal that spells one of
device's own tables again (a tuple or list of the same words: the activation names, the learning
modes, the app modes, the feature names, the sensor kinds) or a file magic, outside the one
module that owns it. The patterns are built from the device's constants, so they cannot go stale.
"""

import ast

from microprop.device import checkpoint, config, features, modelfile, protocol, rehearsal, sensors
from microprop.device.train_plan import LEARN_MODES

from .conftest import ROOT

# (owner, the table): a tuple or list literal holding the same words, in any order, elsewhere
# is a second copy. Subsets (three of the five activations) are choices, not copies.
TABLES = (
    ("device/modelfile.py", modelfile.ACTIVATIONS),
    ("device/config.py", config.LEARN),
    ("device/config.py", LEARN_MODES),  # written as config.LEARN less "off"
    ("device/protocol.py", protocol.MODES),
    ("device/features.py", features.FEATURES),
    ("device/sensors.py", sensors.KINDS),
)
MAGICS = (
    ("device/modelfile.py", modelfile.MAGIC),
    ("device/rehearsal.py", rehearsal.MAGIC),
    ("device/checkpoint.py", checkpoint.MAGIC),
)
FOLDERS = ("device", "host", "firmware_tools", "bench")


def _words(node):
    """The str constants of a tuple or list literal of only str constants, else None."""
    if not isinstance(node, (ast.Tuple, ast.List)) or not node.elts:
        return None
    words = []
    for e in node.elts:
        if not (isinstance(e, ast.Constant) and isinstance(e.value, str)):
            return None
        words.append(e.value)
    return words


def copies(path, rel):
    """[(line number, what)] of the shared tables and magic values `path` writes again."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        words = _words(node)
        if words is not None:
            for owner, table in TABLES:
                if rel != owner and len(words) == len(table) and set(words) == set(table):
                    found.append((node.lineno, "%r (the table of %s)" % (tuple(words), owner)))
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            value = node.value.encode() if isinstance(node.value, str) else node.value
            for owner, magic in MAGICS:
                if rel != owner and value == magic:
                    found.append((node.lineno, "%r (the magic of %s)" % (node.value, owner)))
    return sorted(found)


def test_shared_tables_and_magics_are_written_only_in_their_device_module():
    offenders = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for lineno, what in copies(path, rel):
                offenders.append("%s:%d: %s" % (rel, lineno, what))
    assert not offenders, "shared facts written outside their device module:\n" + "\n".join(
        offenders
    )


def test_the_guard_finds_copies(tmp_path):
    src = tmp_path / "x.py"
    src.write_text(
        '"""A docstring may name last, bias and all."""\n'
        'MODES = ("last", "bias", "all")\n'
        'acts = ["relu", "tanh", "linear", "sigmoid", "softmax"]\n'
        'hidden = ("relu", "sigmoid", "tanh")\n'
        'm = b"MPRP"\n'
        'r = "MPRH"\n'
        'kinds = ("predict", "record")\n'
        'one = "last"\n'
    )
    assert [n for n, _ in copies(src, "host/x.py")] == [2, 3, 5, 6]
    assert [n for n, _ in copies(src, "device/modelfile.py")] == [2, 6]
