"""No module, test or bench script reads another object's private names.

Runs on: host (pytest).

`x._y` is fine where `x` is `self` or `cls`: an object's own state. Anywhere else it reaches
into a module or an object past its public interface (`t._sw`, `trainref._clip`), so a change
inside that module silently breaks its readers. The few private names of MicroPython and
CPython that have no public twin are allowed by name.
"""

import ast

from .helpers import ROOT

FOLDERS = ("device", "host", "firmware_tools", "tests", "bench")

# (what the name is read from, the name): private names of the interpreters themselves
ALLOWED = {
    ("sys.implementation", "_mpy"),  # the .mpy version and architecture: no public twin
    ("os", "_exit"),  # leave a forked child without running the parent's cleanup
}


def dotted(node):
    """`a.b.c` for a chain of names and attributes, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return base and base + "." + node.attr
    return None


def private_reads(source, filename="<source>"):
    """[(line, "x._y")] for every `x._y` in `source` where x is not self or cls."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") and node.attr.endswith("__"):
            continue  # dunders are the language's public protocol
        base = dotted(node.value)
        if base in ("self", "cls") or (base, node.attr) in ALLOWED:
            continue
        base = base or "(%s)" % ast.unparse(node.value)
        found.append((node.lineno, "%s.%s" % (base, node.attr)))
    return sorted(found)


def python_files():
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "node_modules" not in path.parts:
                yield path


def test_nothing_reads_private_names_of_another_object():
    found = []
    for path in python_files():
        for line, name in private_reads(path.read_text(), str(path)):
            found.append("%s:%d: %s" % (path.relative_to(ROOT), line, name))
    assert not found, "private names read from outside their object:\n" + "\n".join(found)


def test_the_scan_finds_what_it_is_for():
    src = "t._sw[0] = 1\nx = trainref._clip(v)\nself._a = m._b.c\ncls._k\nos._exit(1)\n"
    src += "v = sys.implementation._mpy\nf().__dict__\n(a or b)._c\n"
    assert private_reads(src) == [
        (1, "t._sw"),
        (2, "trainref._clip"),
        (3, "m._b"),
        (8, "(a or b)._c"),
    ]
