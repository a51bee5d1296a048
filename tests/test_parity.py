"""`python -m pipeline.parity DIR`: this installation against the values the original code computed
(tests/reference/fixtures, the project's copy of them), one line per case, exit 1 on any failure."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "reference" / "fixtures"


def _parity(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.parity", str(folder)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def _cases() -> set[str]:
    """(fixture, prefix) of every case the manifests describe."""
    classic = json.loads((FIXTURES / "MANIFEST.json").read_text())
    protocol = json.loads((FIXTURES / "protocol" / "PROTOCOL_MANIFEST.json").read_text())
    cases = {f"{kind} {prefix}" for kind, section in classic.items() for prefix in section}
    cases |= {f"data_parity {e['prefix']}" for entries in protocol["data_parity"].values() for e in entries}
    cases |= {f"step_parity {prefix}" for prefix in protocol["step_parity"]}
    return cases


def test_every_fixture_case_is_checked_and_within_its_tolerance():
    r = _parity(FIXTURES)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith(("ok ", "FAIL"))]
    named = {" ".join(line.split()[1:3]).rstrip(":") for line in lines}
    assert named == _cases() and len(lines) == len(named) == 35
    assert all("largest error" in line and "tolerance" in line for line in lines)
    assert r.stdout.strip().splitlines()[-1].startswith("parity: all 35 cases")


def test_a_value_the_installation_does_not_reproduce_fails_naming_its_case(tmp_path):
    for name in ("MANIFEST.json", "model_parity.npz"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    with np.load(tmp_path / "model_parity.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["c1_depth"] = arrays["c1_depth"] * 1.001  # 1e-3 off: ten times the tolerance
    np.savez(tmp_path / "model_parity.npz", **arrays)
    r = _parity(tmp_path)
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert any(line.startswith("ok   model_parity c0_") for line in out)
    assert any(line.startswith("FAIL model_parity c1_") and "(depth)" in line for line in out)
    assert r.stderr.strip() == ("error: 1 of 2 parity cases in " + str(tmp_path) + " fail: this installation "
                                "does not compute what the original computed")


def test_a_folder_without_fixtures_or_with_a_broken_one_is_one_line(tmp_path):
    r = _parity(tmp_path)
    assert r.returncode == 1 and r.stderr.strip().startswith(f"error: {tmp_path}: no parity fixtures")
    shutil.copy(FIXTURES / "protocol" / "data_parity.npz", tmp_path / "data_parity.npz")
    shutil.copy(FIXTURES / "protocol" / "PROTOCOL_MANIFEST.json", tmp_path / "PROTOCOL_MANIFEST.json")
    r = _parity(tmp_path)  # the raw datasets are missing
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'raw'}: missing; data_parity.npz needs the raw " \
                                                "datasets beside it"
