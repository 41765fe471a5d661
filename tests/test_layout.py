"""The house rules of the code layout, read from the code (nothing here imports a heavy module
except where a test says so): domains in folders, no import cycles, tasks/ never reaches into
flows/, modules small enough to read, and the old module paths that registered models need."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest
from test_dvc_deps import ROOT, module_file, modules_named_in

DOMAINS = {"platform", "inputs", "reading", "genre", "clip", "search", "monitor"}
# Module paths that models registered before the move pickled (classes, functions), and where they live now.
LEGACY_PICKLE_PATHS = {
    ("tasks.genre_models", "EnsembleModel"): "tasks.genre.models",
    ("tasks.genre_models", "GenreModel"): "tasks.genre.models",
    ("tasks.text_features", "FeatureBlocks"): "tasks.genre.features",
    ("tasks.text_features", "SentenceEncoder"): "tasks.genre.features",
    ("tasks.text_features", "CharNgramVectorizer"): "tasks.genre.features",
    ("tasks.text_features", "author_tokens"): "tasks.genre.features",
    ("tasks.classifier", "author_tokens"): "tasks.genre.features",
    ("tasks.serving", "GenreClassifierModel"): "tasks.genre.pyfunc",
    ("tasks.serving", "CoverClipModel"): "tasks.clip.pyfunc",
}
LEGACY_MODULES = {"tasks/genre_models.py", "tasks/text_features.py", "tasks/classifier.py", "tasks/serving.py"}
MAX_MODULE_LINES = 350
# One cohesive thing each, a little over the line: the text feature blocks the candidates share.
LONG_BUT_COHESIVE = {"tasks/genre/features.py"}


def project_modules() -> dict[str, Path]:
    modules = {}
    for path in [*ROOT.joinpath("tasks").rglob("*.py"), *ROOT.joinpath("flows").rglob("*.py")]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(path: Path) -> set[str]:
    return {name for name in modules_named_in(path) if module_file(name) is not None}


def test_tasks_is_one_folder_per_domain_plus_the_legacy_paths() -> None:
    folders = {p.name for p in ROOT.joinpath("tasks").iterdir() if p.is_dir() and p.name != "__pycache__"}
    loose = {str(p.relative_to(ROOT)) for p in ROOT.joinpath("tasks").glob("*.py") if p.name != "__init__.py"}
    assert folders == DOMAINS
    assert loose == LEGACY_MODULES, "a module at tasks/ top level belongs in a domain folder"


@pytest.mark.parametrize(("old", "new"), sorted(LEGACY_PICKLE_PATHS.items()))
def test_a_model_pickled_under_an_old_module_path_still_unpickles(old: tuple[str, str], new: str) -> None:
    """What `pickle` does with a registered model's GLOBAL opcode: import the module, take the name."""
    import importlib

    module, name = old
    found = pickle.loads(f"c{module}\n{name}\n.".encode())  # noqa: S301  our own constant payload
    assert found is getattr(importlib.import_module(new), name)


def test_legacy_paths_are_only_aliases() -> None:
    """They hold no code of their own: a fix in the new module is the fix for old models too."""
    for relative in LEGACY_MODULES:
        body = ast.parse((ROOT / relative).read_text(encoding="utf-8")).body
        assert not [node for node in body if isinstance(node, (ast.FunctionDef, ast.ClassDef))], relative


def test_tasks_never_imports_flows() -> None:
    offenders = {str(path.relative_to(ROOT)): sorted(name for name in imports_of(path) if name.startswith("flows"))
                 for name, path in project_modules().items() if name.startswith("tasks")}
    assert not {k: v for k, v in offenders.items() if v}


def test_no_import_cycles_between_modules() -> None:
    """Module-level imports only: a function-level import is how a deliberate late import breaks no cycle."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                top.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top.add(node.module)
                top.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in top if target in modules and target != name and not name.startswith(target + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in graph[node]:
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(target):], target]))
            if target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_modules_stay_readable() -> None:
    long = {str(p.relative_to(ROOT)): n for p in ROOT.joinpath("tasks").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert set(long) <= LONG_BUT_COHESIVE, f"split these by job: {long}"
