"""The code a rule depends on (vitprobe.pipeline.code_deps): the closure of the vitprobe modules its
script imports, read from import statements. Judged on small packages built here and, for every
workflow script, against what a fresh Python interpreter really imports."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO
from vitprobe.pipeline.code_deps import code_version, imported_modules, module_closure

SRC = REPO / "src"
SCRIPTS = sorted((REPO / "workflow" / "scripts").glob("*.py"))


def test_absolute_imports_name_the_module_and_what_it_imports_from():
    source = "import os\nimport vitprobe.x.y\nfrom vitprobe.z import w\nfrom vitprobex import q\nfrom vitprobe import *\n"
    assert imported_modules(source) == {"vitprobe", "vitprobe.x.y", "vitprobe.z", "vitprobe.z.w"}


def test_relative_imports_resolve_against_the_module():
    assert imported_modules("from .b import helper", "vitprobe.a") == {"vitprobe.b", "vitprobe.b.helper"}
    assert imported_modules("from ..e import thing", "vitprobe.sub.c") == {"vitprobe.e", "vitprobe.e.thing"}
    assert imported_modules("from . import d", "vitprobe.sub.c") == {"vitprobe.sub", "vitprobe.sub.d"}
    # In a package's __init__, "." is the package itself.
    assert imported_modules("from . import d", "vitprobe.sub", is_package=True) == {"vitprobe.sub", "vitprobe.sub.d"}
    assert imported_modules("from .. import e", "vitprobe.sub", is_package=True) == {"vitprobe", "vitprobe.e"}
    assert imported_modules("from . import d") == set()  # a script is no package: nothing to resolve against


def test_imports_inside_functions_count():
    source = "def later():\n    import vitprobe.lazy\n    from vitprobe.other import f\n"
    assert imported_modules(source) == {"vitprobe.lazy", "vitprobe.other", "vitprobe.other.f"}


def test_imports_for_annotations_only_do_not_count():
    """An ``if TYPE_CHECKING:`` block never runs (the parameters stage's weight readers name the
    Keras model in annotations only), in a module or a function."""
    source = (
        "from typing import TYPE_CHECKING\nimport typing\nif TYPE_CHECKING:\n    from vitprobe.models.vit import M\n"
        "if typing.TYPE_CHECKING:\n    import vitprobe.heavy\nelse:\n    import vitprobe.light\n"
        "def f():\n    if TYPE_CHECKING:\n        import vitprobe.other\n"
    )
    assert imported_modules(source) == {"vitprobe.light"}  # an else runs
    assert imported_modules(source.replace("TYPE_CHECKING:", "RUNNING:")) == {
        "vitprobe.models.vit",
        "vitprobe.models.vit.M",
        "vitprobe.heavy",
        "vitprobe.light",
        "vitprobe.other",
    }


def write_package(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


PACKAGE = {
    "vitprobe/__init__.py": "",
    "vitprobe/a.py": "import numpy\nfrom .b import helper\n",
    "vitprobe/b.py": "def helper():\n    from vitprobe.sub import c\n",
    "vitprobe/sub/__init__.py": "from . import d\n",
    "vitprobe/sub/c.py": "from ..e import thing\n",
    "vitprobe/sub/d.py": "",
    "vitprobe/e.py": "thing = 1\n",
    "vitprobe/unused.py": "",
    "vitprobe/other/__init__.py": "",
    "vitprobe/other/f.py": "import vitprobe.unused\n",
}


def test_closure_follows_imports_through_packages_and_functions(tmp_path):
    write_package(tmp_path / "src", PACKAGE)
    (tmp_path / "script.py").write_text("import vitprobe.a\n")
    closure = module_closure(tmp_path / "script.py", tmp_path / "src")
    # sub/__init__ is run by importing sub.c, and it imports d; names imported from a module are no modules.
    expected = ["vitprobe", "vitprobe.a", "vitprobe.b", "vitprobe.e", "vitprobe.sub", "vitprobe.sub.c", "vitprobe.sub.d"]
    assert list(closure) == expected
    assert closure["vitprobe.sub"] == tmp_path / "src" / "vitprobe" / "sub" / "__init__.py"
    assert closure["vitprobe.e"] == tmp_path / "src" / "vitprobe" / "e.py"


def test_code_version_changes_with_an_edit_inside_the_closure_only(tmp_path):
    src = tmp_path / "src"
    write_package(src, PACKAGE)
    script = tmp_path / "script.py"
    script.write_text("from vitprobe.sub import c\n")
    before = code_version(script, src)
    assert set(before) == {
        "vitprobe/__init__.py",
        "vitprobe/sub/__init__.py",
        "vitprobe/sub/c.py",
        "vitprobe/sub/d.py",
        "vitprobe/e.py",
    }
    (src / "vitprobe" / "a.py").write_text("# outside the closure\n")
    os.utime(src / "vitprobe" / "e.py")  # a touch changes no content
    assert code_version(script, src) == before
    (src / "vitprobe" / "e.py").write_text("thing = 2\n")
    after = code_version(script, src)
    assert {k for k in before if before[k] != after[k]} == {"vitprobe/e.py"}


# Runs each script's import statements only (no snakemake object needed) and lists the vitprobe
# modules that Python loaded, with their files. One interpreter for all scripts: the vitprobe modules
# are dropped from sys.modules after each, so each script's imports run them afresh (third-party
# libraries stay loaded; importing a vitprobe module does not depend on them being loaded already).
IMPORTS_ONLY = """
import ast, json, sys
loaded = {}
for path in sys.argv[1:]:
    tree = ast.parse(open(path).read())
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    exec(compile(ast.Module(imports, type_ignores=[]), path, "exec"), {})
    ours = [m for m in sys.modules if m == "vitprobe" or m.startswith("vitprobe.")]
    loaded[path] = {m: sys.modules[m].__file__ for m in ours}
    for m in ours:
        del sys.modules[m]
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def really_imported() -> dict[Path, dict[str, Path]]:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS_ONLY, *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.splitlines()[-1])
    return {Path(script): {name: Path(file) for name, file in modules.items()} for script, modules in loaded.items()}


def test_every_script_imports_only_at_module_level():
    """The comparison below runs a script's import statements; they are all at its top level."""
    for script in SCRIPTS:
        tree = ast.parse(script.read_text())
        top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        every = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert top == every, script.name


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_closure_equals_what_python_imports(script, really_imported):
    """Importing the script loads exactly its closure without the imports inside functions; the
    rules' closure adds those (they run when the stage calls the function)."""
    assert really_imported[script] == module_closure(script, SRC, in_functions=False)
    lazy = set(module_closure(script, SRC)) - set(really_imported[script])
    assert lazy <= {"vitprobe.kernels", "vitprobe.kernels.fused_attention"}, lazy  # jax only: imported where it runs


NUMERICAL = ("keras", "tensorflow", "torch", "jax")


def test_snakefile_imports_load_no_numerical_library():
    """The Snakefile imports these to plan jobs: planning stays fast, and a job's thread limit can
    still be set when its script runs."""
    check = (
        "import sys, vitprobe.pipeline.config, vitprobe.pipeline.code_deps\n"
        f"print(sorted(m for m in {NUMERICAL!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


MODEL_MODULES = {"vitprobe.api", "vitprobe.models.vit", "vitprobe.compiled", "vitprobe.pipeline.model"}


@pytest.mark.parametrize("script", ["pca_features.py", "explorer.py", "maps.py", "parameters.py"])
def test_map_image_and_parameter_stages_run_no_model(script):
    """The PCA views and the explorer read what the extract job of the map images' shard kept, and
    the parameters stage reads the checkpoint's arrays: none of them can build a model (no module
    of the model stack in their closure, imports inside functions included), and running the
    script's imports loads no numerical library."""
    path = REPO / "workflow" / "scripts" / script
    assert not MODEL_MODULES & set(module_closure(path, SRC)), script
    check = (
        "import ast, sys\n"
        f"tree = ast.parse(open({str(path)!r}).read())\n"
        "imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]\n"
        "exec(compile(ast.Module(imports, type_ignores=[]), 'script', 'exec'), {})\n"
        f"print(sorted(m for m in {NUMERICAL!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", script


def test_only_the_scripts_that_load_a_model_depend_on_the_downloader():
    """Machine concerns (the cache folder, thread limits, the backend) live in vitprobe.environment
    and vitprobe.hardware, not in the download code: an edit of weights/fetch.py reruns the rules
    that load weights and no other (every job starts through pipeline/runlog.py)."""
    fetching = {script.name for script in SCRIPTS if "vitprobe.weights.fetch" in module_closure(script, SRC)}
    loading = {script.name for script in SCRIPTS if "vitprobe.pipeline.model" in module_closure(script, SRC)}
    # The parameters export reads the checkpoint's arrays without a model: it fetches, loads nothing.
    assert fetching == loading | {"parameters.py"} and {"extract.py", "extract_attention.py"} <= fetching
    assert not {"sample.py", "prepare.py", "aggregate.py", "cka.py", "figure_rollout.py"} & fetching
    assert "vitprobe.weights.fetch" not in module_closure(SRC / "vitprobe" / "pipeline" / "runlog.py", SRC)
