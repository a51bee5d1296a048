"""dvc.yaml's edges are the real dependencies: each stage depends on the code its entry point imports
(no more, no less, by package folder) and on whole params sections, never on ``runtime``."""
import ast
from pathlib import Path

import pytest
import yaml

from xtask.common.config import SECTIONS, TRAINED
from xtask.evaluation.identity import EVALUATE_CODE
from xtask.training.resume import TRAIN_CODE

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# Imported by the entry points but never a dependency: argument parsing (dvc.yaml passes every
# argument that matters) and where a stage runs (docker, torchrun), which changes no result.
NOT_DEPENDENCIES = ("xtask/common/cli.py", "xtask/runtime")
# The stages whose entry point is pipeline/<name>.py, with the params prefix of their dataset.
ENTRY = {"generate": "generate", "prepare": "prepare", "train": "train", "evaluate": "evaluate",
         "inference_time": "inference_time", "figure": "figure", "report": "report"}


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Every module of this repository that ``path`` imports (at any depth of its body)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("xtask", "pipeline"):
                # a package's __init__ runs too when one of its modules is imported
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def closure(entry: Path) -> set[Path]:
    """The repository's source files that running ``entry`` imports, ``entry`` included."""
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            file = _module_file(name)
            if file is not None and file not in seen:
                todo.append(file)
    return seen


def _docstring_only(path: Path) -> bool:
    """A package's __init__ that only describes the package runs no code."""
    body = ast.parse(path.read_text()).body
    return len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)


def _code_deps(stage: dict) -> list[str]:
    body = stage.get("do", stage)
    return [d for d in body["deps"] if d.startswith(("xtask", "pipeline"))]


def _covers(dep: str, file: Path) -> bool:
    rel = file.relative_to(ROOT).as_posix()
    return rel == dep or rel.startswith(dep.rstrip("/") + "/")


@pytest.mark.parametrize("stage", sorted(ENTRY))
def test_a_stage_depends_on_the_code_it_runs_and_on_nothing_else(stage):
    deps = _code_deps(STAGES[stage])
    files = {f for f in closure(ROOT / "pipeline" / f"{ENTRY[stage]}.py") if not _docstring_only(f)}
    run = {f for f in files if not any(_covers(d, f) for d in NOT_DEPENDENCIES)}
    undeclared = sorted(f.relative_to(ROOT).as_posix() for f in run if not any(_covers(d, f) for d in deps))
    assert not undeclared, f"{stage} runs code it does not depend on in dvc.yaml: {undeclared}"
    unused = [d for d in deps if not any(_covers(d, f) for f in run)]
    assert not unused, f"{stage} depends on code it never imports: {unused}"


def _params(stage: dict) -> list[str]:
    return list(stage.get("do", stage).get("params", []))


ITEMS = {"prepare": "${item}", "train": "${item.dataset}", "evaluate": "${item.dataset}",
         "inference_time": "${item}", "figure": "${item.dataset}"}


@pytest.mark.parametrize("stage", sorted(ITEMS))
def test_a_stage_depends_on_whole_params_sections_and_never_on_runtime(stage):
    item = ITEMS[stage]
    sections = [p.removeprefix(item + ".") for p in _params(STAGES[stage]) if p.startswith(item + ".")]
    assert sections and all(s in SECTIONS for s in sections), sections
    assert "runtime" not in sections


def test_the_train_stage_depends_on_the_sections_a_resumable_state_and_config_id_hash():
    # the resume state and the metrics' config_id are keyed by TRAINED: a section DVC retrains for but the
    # hash ignored would let a run resume another's state
    assert _params(STAGES["train"]) == [f"${{item.dataset}}.{s}" for s in TRAINED] + ["launch.nproc_per_node"]


def test_the_resume_state_hashes_the_code_the_train_stage_depends_on():
    assert sorted(TRAIN_CODE) == sorted(_code_deps(STAGES["train"]))


def test_the_metrics_config_id_hashes_the_code_the_evaluate_stage_depends_on():
    assert sorted(EVALUATE_CODE) == sorted(_code_deps(STAGES["evaluate"]))


def test_the_closure_sees_through_relative_and_package_imports(tmp_path):
    # the helper itself: an edit to xtask/training/losses.py must be seen as code the train stage runs
    files = {f.relative_to(ROOT).as_posix() for f in closure(ROOT / "pipeline" / "train.py")}
    assert {"xtask/training/losses.py", "xtask/core/model/decoder.py", "xtask/common/config.py"} <= files
    assert not any(f.startswith("xtask/reporting") for f in files)
    # the figure is drawn by the reporting code alone: evaluate does not run it
    evaluated = {f.relative_to(ROOT).as_posix() for f in closure(ROOT / "pipeline" / "evaluate.py")}
    assert not any(f.startswith("xtask/reporting") for f in evaluated)
