"""`make image-test`'s commands and configuration (xtask/tools/image_test.py), checked without an engine: the
test itself builds and runs the image only where it is invoked (docs/containers.md)."""
import fnmatch
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from xtask.common.errors import XTaskError
from xtask.tools import image_test as it
from xtask.tools.check_metrics import CHECKED

ROOT = Path(__file__).resolve().parents[1]


def test_build_uses_the_repositorys_dockerfile_on_the_local_stand_in_with_its_own_python():
    argv = it.build_argv(ROOT, mounts=["--volume=/opt/wheels:/opt/wheels:ro"])
    assert argv[:2] == ["podman", "build"] and argv[-1] == str(ROOT)
    assert "--pull=never" in argv  # the base is local: no registry is asked
    args = [argv[i + 1] for i, a in enumerate(argv) if a == "--build-arg"]
    assert args == [f"BASE={it.STANDIN}", "PYTHON=distro"] and it.STANDIN.startswith("localhost/")
    assert argv[argv.index("--file") + 1] == str(ROOT / "Dockerfile")
    assert "--volume=/opt/wheels:/opt/wheels:ro" in argv


def test_pip_mounts_are_the_existing_paths_read_only_with_home_as_roots(tmp_path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "home" / ".config" / "pip").mkdir(parents=True)
    mounts = it.pip_mounts((str(tmp_path / "wheels"), str(tmp_path / "absent"), "~/.config/pip", "~/.pip"),
                           home=str(tmp_path / "home"))
    assert mounts == [f"--volume={tmp_path}/wheels:{tmp_path}/wheels:ro",
                      f"--volume={tmp_path}/home/.config/pip:/root/.config/pip:ro"]


def test_the_run_deletes_exactly_the_checked_metrics_then_reproduces_everything_offline():
    argv = it.run_argv("c", threads=3)
    assert argv[:2] == ["podman", "run"] and "--network=none" in argv and "OMP_NUM_THREADS=3" in argv
    assert argv[-4:-1] == [it.IMAGE, "bash", "-c"]
    assert argv[-1] == f"rm -f {it.CHECKED_GLOB} && exec xtask-repro --force"
    # the glob the container's shell deletes and the files metrics_check compares are the same set
    files = subprocess.run(["git", "ls-files", "metrics"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    globbed = {f for f in files if fnmatch.fnmatch(f, it.CHECKED_GLOB)}
    assert globbed and globbed == {f for f in files if CHECKED.search(f)}


def test_engine_config_is_toml_with_storage_under_the_work_dir_and_the_hosts_limits(tmp_path):
    it.write_engine_config(tmp_path, {"nofile": "1024:20000", "nproc": "-1:-1"})
    storage = tomllib.loads((tmp_path / "storage.conf").read_text())["storage"]
    assert storage["graphroot"] == f"{tmp_path}/storage" and storage["driver"] == "overlay"
    conf = tomllib.loads((tmp_path / "containers.conf").read_text())
    assert conf["containers"]["default_ulimits"] == ["nofile=1024:20000", "nproc=-1:-1"]
    docker = tomllib.loads((tmp_path / "containers-docker.conf").read_text())
    assert "containers" not in docker and docker["engine"] == conf["engine"]  # stock limits for the docker route
    env = it.engine_env(tmp_path, {"PATH": "/bin"})
    assert env["CONTAINERS_CONF"] == str(tmp_path / "containers.conf") and env["PATH"] == "/bin"


def test_the_docker_route_is_launchs_command_with_its_training_replaced_by_a_probe():
    argv = it.docker_probe_argv(Path("/r"), "img:t", {})
    at = argv.index("img:t")
    assert argv[at + 1:] == ["python", "-c", it.PROBE] and argv[:2] == ["docker", "run"]
    assert "--ulimit" in argv and argv[argv.index("--gpus") + 1] == "all"  # nothing of launch's dropped
    launched = it.launch.launch_argv(it.LaunchConfig(where="docker", image="img:t"), [], {}, Path("/r"),
                                     it.os.getuid(), it.os.getgid())
    assert argv[:at + 1] == launched[:launched.index("img:t") + 1]


def test_the_probe_prints_what_the_docker_route_checks(tmp_path):
    (tmp_path / "dvc.yaml").write_text("")
    # a stand-in torch: importing the real one takes seconds, and the image's is what the route runs
    (tmp_path / "torch.py").write_text("import types\n__version__ = '0.0'\ncuda = types.SimpleNamespace("
                                       "is_available=lambda: False)\n")
    r = subprocess.run([sys.executable, "-c", it.PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert it.probe_line(f"{soft}:{hard}") in r.stdout
    assert it.probe_line("1:2") not in r.stdout


def test_missing_tools_stop_with_one_line_naming_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(it.shutil, "which", lambda name, **kw: None if name == "debootstrap" else "/usr/bin/x")
    with pytest.raises(XTaskError, match=r"^image-test: debootstrap not found; install them .*apt-get install"):
        it.image_test(ROOT, tmp_path)


def test_a_work_dir_inside_the_repository_is_refused(monkeypatch):
    monkeypatch.setattr(it.shutil, "which", lambda name, **kw: "/usr/bin/x")
    monkeypatch.setattr(it.os, "geteuid", lambda: 0)
    with pytest.raises(XTaskError, match="inside the repository"):
        it.image_test(ROOT, ROOT / "build" / "image")


def test_remove_tree_removes_a_tree_and_ignores_a_missing_one(tmp_path):
    tree = tmp_path / "rootfs.partial"
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "usr" / "bin" / "sh").write_text("")
    it.remove_tree(tree)
    it.remove_tree(tree)
    assert not tree.exists()


def test_the_makefile_target_runs_the_entry_with_its_dir_and_thread_count():
    text = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^image-test:.*\n\t(.*)$", text, re.M).group(1)
    assert "-m xtask.tools.image_test --dir $(IMAGE_TEST_DIR) --threads $(CHECK_THREADS)" in recipe
    assert re.search(r"^\.PHONY:.* image-test\b", text, re.M)
    assert "image-test" not in (ROOT / ".ci" / "run").read_text()  # opt-in: CI has no engine


def test_the_build_and_run_get_the_limits_launchs_docker_route_passes(monkeypatch):
    import resource
    limits = {resource.RLIMIT_NOFILE: (1024, 20000), resource.RLIMIT_NPROC: (500, 600)}
    monkeypatch.setattr(resource, "getrlimit", limits.__getitem__)
    assert it.launch.container_ulimits() == {"nofile": "1024:20000", "nproc": "500:600"}
    argv = it.launch.launch_argv(it.LaunchConfig(where="docker", image=it.IMAGE), [], {}, Path("/r"), 0, 0)
    assert [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ulimit"] == ["nofile=1024:20000", "nproc=500:600"]
