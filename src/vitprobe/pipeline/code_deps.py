"""The library code a pipeline script runs: the closure of the `vitprobe` modules it imports,
found by reading the import statements (``ast``), never by importing anything.

Every import statement counts, also one inside a function: it runs when the stage calls that
function; not one under ``if TYPE_CHECKING:``, which never runs. Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too, so those files
are in the closure. The Snakefile turns each rule's closure into a parameter (a content hash per
file), so an edit reruns exactly the rules whose scripts import the edited module.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "vitprobe"


def _module_file(root: Path, module: str) -> Path | None:
    """The file of ``vitprobe.x.y`` under ``root`` (the folder holding the package), if any."""
    base = root.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _type_checking_only(node: ast.AST) -> bool:
    """Whether ``node`` is an ``if TYPE_CHECKING:`` block (imports for annotations, never run)."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.AST, in_functions: bool):
    """Every node of ``tree`` but the body of an ``if TYPE_CHECKING:``; without ``in_functions``,
    not those inside a function body either (which run when the function is called, not when the
    module is imported)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        if _type_checking_only(node):
            pending.extend(node.orelse)  # an ``else:`` does run
        elif in_functions or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))


@functools.lru_cache(maxsize=None)  # keyed by the source text: the Snakefile asks for ~30 closures of shared modules
def imported_modules(
    source: str, module: str | None = None, is_package: bool = False, in_functions: bool = True
) -> frozenset[str]:
    """Every `vitprobe` module named by an import statement in ``source`` (the code of
    ``module``, needed to resolve relative imports), as dotted names. ``from m import x`` names
    ``m.x`` too, which is a module when ``x`` is one (kept if a file exists for it).
    ``in_functions``: also the imports inside function bodies (default)."""
    found = set()
    for node in _statements(ast.parse(source), in_functions):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    continue  # a relative import outside a package
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return frozenset(name for name in found if name == PACKAGE or name.startswith(PACKAGE + "."))


def module_closure(script: str | Path, root: str | Path, in_functions: bool = True) -> dict[str, Path]:
    """Module name -> file for every `vitprobe` module that ``script`` imports, directly or
    through other modules, with the packages they sit in. ``root``: the folder holding the
    ``vitprobe`` package (``src``). Without ``in_functions``: only what importing the script
    loads (imports inside functions, such as a backend-only kernel, left out)."""
    root = Path(root)
    closure: dict[str, Path] = {}
    pending = set(imported_modules(Path(script).read_text(), in_functions=in_functions))
    while pending:
        name = pending.pop()
        for module in _with_parents(name):
            if module in closure:
                continue
            path = _module_file(root, module)
            if path is None:
                continue  # a name imported from a module, not a module itself
            closure[module] = path
            pending |= imported_modules(path.read_text(), module, path.name == "__init__.py", in_functions)
    return dict(sorted(closure.items()))


def code_version(script: str | Path, root: str | Path) -> dict[str, str]:
    """The closure as ``{path relative to root: sha256 prefix of its content}``: a value that
    changes exactly when the code a script runs changes (a touch alone changes nothing)."""
    root = Path(root)
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for path in module_closure(script, root).values()
    }


def files_version(folder: str | Path, root: str | Path) -> dict[str, str]:
    """Like `code_version` for a folder of package data that code reads at run time (the
    explorer's page template): ``{path relative to root: sha256 prefix}`` of every file in it."""
    root = Path(root)
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for path in sorted(Path(folder).iterdir())
        if path.is_file()
    }
