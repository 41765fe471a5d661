"""`dvc repro` reruns a stage only when a declared dependency changed, so every project module a
stage's command runs must be declared: this holds dvc.yaml's `deps` against the import closure of
each stage's `python -m flows.<stage>`, read from the code itself (no module is imported)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("flows", "tasks")
# A module that a stage starts as a process (`python -m tasks.clip.worker`) is as much its code as an import.
MODULE_STRING = re.compile(r"^(?:flows|tasks)(?:\.\w+)+$")
# A stage that unpickles a registered model runs that model's classes from the project's modules.
UNPICKLED_CODE = {"label_covers": ["tasks.genre.pyfunc", "tasks.genre.models", "tasks.genre.features"]}


def module_file(module: str) -> Path | None:
    """The project file of a dotted module name (a package's __init__.py), or None outside the project."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def is_docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def modules_named_in(path: Path) -> set[str]:
    """Every project module `path` imports (at any depth: function-level imports count) or starts by name."""
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            named.add(node.module)
            named.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from tasks.clip import loop`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.match(node.value):
            named.add(node.value)
    with_parents = set(named)
    for module in named:  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        parts = module.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return with_parents


def import_closure(*modules: str) -> set[Path]:
    """The project files that running `python -m <module>` can execute (docstring-only package files left out)."""
    starts = [module_file(module) for module in modules]
    assert None not in starts, f"{modules} are not all project modules"
    seen, todo = set(), list(starts)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(found for name in modules_named_in(path) if (found := module_file(name)) is not None)
    return {path for path in seen if not (path.name == "__init__.py" and is_docstring_only(path))}


def stage_code(stage: str, spec: dict) -> set[Path]:
    command = re.fullmatch(r"python -m ([\w.]+)", spec["cmd"])
    assert command, f"{stage}: cmd {spec['cmd']!r} is not `python -m <module>`; teach this test how to read it"
    return import_closure(command.group(1), *UNPICKLED_CODE.get(stage, []))


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def declared(deps: list[str]) -> list[Path]:
    return [ROOT / dep for dep in deps if "${" not in dep]


def covered(path: Path, deps: list[Path]) -> bool:
    return any(path == dep or dep in path.parents for dep in deps)


@pytest.mark.parametrize("stage", sorted(stages()))
def test_every_module_a_stage_runs_is_a_declared_dependency(stage: str) -> None:
    spec = stages()[stage]
    missing = sorted(str(path.relative_to(ROOT)) for path in stage_code(stage, spec)
                     if not covered(path, declared(spec.get("deps", []))))
    assert not missing, f"dvc.yaml stage {stage} runs these modules but does not list them in deps: {missing}"


@pytest.mark.parametrize("stage", sorted(stages()))
def test_no_stage_declares_code_it_does_not_run(stage: str) -> None:
    """A stale dependency reruns a stage for nothing; a renamed module would leave one behind."""
    spec = stages()[stage]
    closure = stage_code(stage, spec)
    code = [dep for dep in declared(spec.get("deps", [])) if dep.suffix == ".py"]
    stale = sorted(str(dep.relative_to(ROOT)) for dep in code if dep not in closure)
    assert not stale, f"dvc.yaml stage {stage} lists code its command never runs: {stale}"


def test_the_closure_follows_function_level_imports_and_process_targets() -> None:
    """The two ways a module reaches code that a plain top-level import scan would miss."""
    finetune = import_closure("flows.finetune_clip")
    assert ROOT / "tasks/clip/worker.py" in finetune  # started by torchrun, never imported
    assert ROOT / "tasks/clip/model.py" in import_closure("flows.index_covers")
