"""The README's and docs' commands run as written.

A fenced ```bash block right after a line `<!-- runnable -->` is a promise that it runs as written on a
set-up checkout: every such block must be valid bash, and every `make` target, `python -m pipeline.X`
(or `torchrun ... -m pipeline.X`) module with its options and `dvc` subcommand it names must exist, and
a module's required options must be there. A block after `<!-- runnable: cheap -->`
is also run here, in the repository (read-only commands only), and must exit 0.
"""
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^<!-- runnable(?P<cheap>: cheap)? -->\n\s*```bash\n(?P<body>.*?)^\s*```", re.M | re.S)
BIN = Path(sys.executable).parent


def blocks(text: str) -> list[tuple[bool, str]]:
    """(cheap?, body) of every marked block; the body's lines unindented (blocks may sit in a list)."""
    out = []
    for m in BLOCK.finditer(text):
        lines = m["body"].splitlines()
        indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
        out.append((bool(m["cheap"]), "\n".join(x[indent:] for x in lines)))
    return out


def commands(body: str) -> list[list[str]]:
    """Each simple command of a block as words (comments, continuations and `&&`/`;`/`|` chains split)."""
    text = body.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        cmd: list[str] = []
        for w in words + [";"]:
            if w in (";", "&&", "||", "|"):
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return [c for c in out if c]


def _strip_env(cmd: list[str]) -> list[str]:
    while cmd and re.match(r"^[A-Z_][A-Z0-9_]*=", cmd[0]):
        cmd = cmd[1:]
    return cmd


@lru_cache(maxsize=None)
def _help(module: str) -> str:
    r = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"python -m {module} --help: {r.stderr.strip()[-300:]}"
    return r.stdout


@lru_cache(maxsize=None)
def _dvc_ok(sub: tuple[str, ...]) -> bool:
    r = subprocess.run([str(BIN / "dvc"), *sub, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return r.returncode == 0


def required_options(help_text: str) -> list[str]:
    """The options argparse's usage line shows outside brackets: the required ones."""
    usage = help_text.split("\n\n", 1)[0]
    previous = None
    while previous != usage:  # innermost brackets first: [--a [--b]] goes whole
        previous, usage = usage, re.sub(r"\[[^\[\]]*\]", "", usage)
    return re.findall(r"(?<!\S)--[\w-]+", usage)


def _module_problems(module: str, args: list[str]) -> list[str]:
    text = _help(module)
    given = {w.split("=")[0] for w in args if w.startswith("--")}
    return ([f"{module}: option {w} not in its --help" for w in args if w.startswith("--") and w.split("=")[0] not in text]
            + [f"{module}: required option {o} missing" for o in required_options(text) if o not in given])


def _torchrun_module(cmd: list[str]) -> int | None:
    """The index of `-m` in ``torchrun ... -m pipeline.X ...`` (None without one)."""
    for i, w in enumerate(cmd[1:-1], 1):
        if w == "-m" and cmd[i + 1].startswith("pipeline."):
            return i
    return None


def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def problems(cmd: list[str]) -> list[str]:
    """What in one command names something that does not exist ([] if nothing)."""
    cmd = _strip_env(cmd)
    if not cmd:
        return []
    prog = Path(cmd[0]).name
    if prog == "make":
        missing = [t for t in cmd[1:] if not t.startswith("-") and "=" not in t and t not in _make_targets()]
        return [f"make target {t!r} not in the Makefile" for t in missing]
    if prog in ("python", "python3") and cmd[1:2] == ["-m"] and cmd[2].startswith("pipeline."):
        return _module_problems(cmd[2], cmd[3:])
    if prog == "torchrun" and _torchrun_module(cmd) is not None:
        i = _torchrun_module(cmd)
        return _module_problems(cmd[i + 1], cmd[i + 2:])
    if prog == "dvc":
        sub = tuple(w for w in cmd[1:3] if not w.startswith("-"))[:2]
        if not (_dvc_ok(sub) or _dvc_ok(sub[:1])):
            return [f"dvc {' '.join(sub)}: not a dvc command"]
    return []


MARKED = [(page, cheap, body) for page in PAGES for cheap, body in blocks(page.read_text())]


def test_the_readme_marks_its_commands():
    readme = [b for p, _, b in MARKED if p.name == "README.md"]
    assert any("make repro" in b and "make test" in b for b in readme)
    assert any(cheap for _, cheap, _ in MARKED)


@pytest.mark.parametrize("page,cheap,body", MARKED, ids=[f"{p.name}:{i}" for i, (p, _, _) in enumerate(MARKED)])
def test_a_marked_block_is_valid_bash_naming_what_exists(page, cheap, body):
    r = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True)
    assert r.returncode == 0, f"{page.name}: {r.stderr}"
    found = [p for cmd in commands(body) for p in problems(cmd)]
    assert not found, f"{page.name}: {found}"


@pytest.mark.parametrize("page,body", [(p, b) for p, cheap, b in MARKED if cheap])
def test_a_cheap_block_runs(page, body):
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home())}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, f"{page.name}:\n{body}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"


def test_the_checks_can_fail():
    assert problems(["make", "no-such-target"]) == ["make target 'no-such-target' not in the Makefile"]
    assert problems(["python", "-m", "pipeline.report", "--metrics", "m", "--md", "a", "--csv", "b", "--summary", "c",
                     "--no-such-option"]) == ["pipeline.report: option --no-such-option not in its --help"]
    assert problems(["dvc", "no-such-command"]) == ["dvc no-such-command: not a dvc command"]
    # torchrun's own options are its own; the module's come after `-m pipeline.X`, required ones included
    assert problems(["torchrun", "--nproc_per_node", "2", "-m", "pipeline.train", "synthetic", "--data", "d",
                     "--out", "o"]) == ["pipeline.train: required option --live missing"]
    assert problems(["torchrun", "--nproc_per_node", "2", "-m", "pipeline.train", "synthetic", "--data", "d",
                     "--out", "o", "--live", "l", "--no-such-option"]) == [
        "pipeline.train: option --no-such-option not in its --help"]
    assert problems(["python", "-m", "pipeline.report", "--md", "a", "--csv", "b", "--summary", "c"]) == [
        "pipeline.report: required option --metrics missing"]
    assert commands("A=1 make repro && dvc dag  # a comment\nx \\\n  y") == [["A=1", "make", "repro"],
                                                                              ["dvc", "dag"], ["x", "y"]]


def test_the_venv_is_activated_before_the_readmes_first_bare_dvc_command():
    text = (ROOT / "README.md").read_text()
    activate = text.find("source .venv/bin/activate")
    first_dvc = min(text.find(body) for _, _, body in MARKED if any(
        _strip_env(cmd)[:1] == ["dvc"] for cmd in commands(body)) and body in text)
    assert 0 <= activate < first_dvc


def test_the_readmes_first_screen_says_what_never_ran():
    # before the first section: what a reader sees before deciding to try it
    first_screen = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    never = first_screen.split("Never run", 1)[1]
    for what in ("Cityscapes", "NYUv2", "CUDA", "Docker build", "several GPUs", "GitHub workflow"):
        assert what in never, what
    assert "Intel Xeon" in first_screen and "AMD EPYC" in first_screen and "synthetic" in first_screen
