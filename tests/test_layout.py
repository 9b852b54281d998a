"""The module map holds: what the Lambda runs is one folder that imports nothing of the training side, and every public
name a notebook exports has an example there that asserts on it."""
import ast, json, re, sys
from pathlib import Path

import pytest

from helpers import ROOT
LIB = ROOT / "nutrino_ml"
# what the runtime may import besides the standard library and itself: its dependencies (chalice_app/requirements.txt),
# boto3 (the Lambda runtime provides it) and the library's settings module
RUNTIME_DEPS = {"numpy", "onnxruntime", "boto3"}


def imports(path: Path) -> list:
    "`(level, module)` of every import in `path`, functions' bodies included."
    out = []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import): out += [(0, a.name) for a in n.names]
        elif isinstance(n, ast.ImportFrom): out.append((n.level, n.module or ""))
    return out


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for p in (LIB / "runtime").glob("*.py")))
def test_the_runtime_imports_only_itself_config_and_its_dependencies(path):
    for level, mod in imports(ROOT / path):
        top = mod.split(".")[0]
        if level == 1: continue  # nutrino_ml.runtime.<x>
        if level == 2: assert mod == "config", f"{path}: from ..{mod} (the runtime may import only nutrino_ml.config outside itself)"
        else: assert top in sys.stdlib_module_names or top in RUNTIME_DEPS or mod.startswith("nutrino_ml.runtime"), f"{path}: import {mod}"


def test_the_library_never_imports_the_app():
    for p in LIB.rglob("*.py"):
        assert not [m for _, m in imports(p) if m.split(".")[0] in ("app", "chalice_app")], f"{p.relative_to(ROOT)} imports the app"
        assert "spec_from_file_location" not in p.read_text(), f"{p.relative_to(ROOT)} loads a module from a file (the app?)"


def public_without_example(nb: Path) -> list:
    "Public names exported by notebook `nb` that none of its example cells asserts on."
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    exported, examples = set(), []
    for c in cells:
        src = "".join(c["source"])
        if re.match(r"#\|\s*export", src):
            for n in ast.parse(src).body:
                if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_"): exported.add(n.name)
            for n in ast.parse(src).body:  # methods patched onto a class: `OnlineStore.put_rows, OnlineStore.rows = _put_rows, _rows`
                for t in (n.targets if isinstance(n, ast.Assign) else []):
                    exported |= {e.attr for e in (t.elts if isinstance(t, ast.Tuple) else [t]) if isinstance(e, ast.Attribute) and not e.attr.startswith("_")}
        elif "nbdev_export()" not in src:
            examples.append(src)
    asserting = "\n".join(e for e in examples if re.search(r"test_eq|test_fail|test_close|test_ne|assert |np\.testing|pd\.testing|same_rows", e))
    return sorted(n for n in exported if not re.search(rf"\b{re.escape(n)}\b", asserting))


@pytest.mark.parametrize("nb", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "nbs").rglob("*.ipynb")))
def test_every_public_name_has_an_asserting_example(nb):
    assert public_without_example(ROOT / nb) == [], f"{nb}: public names with no asserting example"


@pytest.mark.parametrize("nb", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "nbs").rglob("*.ipynb")))
def test_every_notebook_names_the_projects_kernel(nb):
    "JupyterLab opens a notebook on the kernel its metadata names, without a 'Select Kernel' dialog, when that kernel exists."
    from jupyter_client.kernelspec import KernelSpecManager
    spec = json.loads((ROOT / nb).read_text())["metadata"].get("kernelspec", {})
    assert spec.get("name") == "python3", f"{nb}: kernelspec {spec or 'missing'}; the project's kernel is python3 (.venv)"
    assert Path(KernelSpecManager().get_kernel_spec("python3").argv[0]).name.startswith("python"), "no python3 kernel in the venv"


def test_every_cli_option_has_help():
    import argparse
    from nutrino_ml.cli import make_parser, walk_parsers
    missing = [(" ".join(words), a.option_strings or a.dest) for words, p in walk_parsers(make_parser()) for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert missing == [], f"options without help text: {missing}"


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for p in LIB.rglob("*.py") if p.name != "_modidx.py"))
def test_no_module_binds_a_top_level_name_twice(path):
    """Notebooks patch methods in with module-level helpers (`def _dynamo_x(self: Store, ...)`): two cells of one notebook
    that define the same helper name silently replace the first one for every later call, so each name is bound once."""
    seen, twice = set(), []
    for n in ast.parse((ROOT / path).read_text()).body:
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)):
            twice += [n.name] if n.name in seen else []
            seen.add(n.name)
    assert twice == [], f"{path} defines {twice} more than once"
