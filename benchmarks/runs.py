"""Run the synthetic default under variants and keep every metric each run produced.

    python benchmarks/runs.py [--out benchmarks/runs] [VARIANT ...]

Each variant runs `dvc repro report` (generate, prepare, train, evaluate, report: the default params
with the variant's changes) in a temporary copy of the repository and stores all metrics JSON it wrote
(metrics/ and dvclive/, with `seed<k>` in paths written as `seedK`) in `<out>/<variant>.json`. A variant
whose file exists is skipped, so an interrupted series resumes. Without VARIANT, all of VARIANTS run.

The variants (the figures of benchmarks/README.md and benchmarks/runs.md come from them):
- `original-s<k>`: the default (protocol original, fp32, 2 CPU threads), seed k: the seed spread;
- `corrected-s<k>`: protocol corrected: what the corrections change;
- `bf16-s<k>`: bf16 autocast: what the precision changes;
- `kernels-*`: seed 0 with other CPU kernels (other instruction sets, one thread): stand-ins for
  another CPU kind, each a different summation order of the same computation.
`python benchmarks/analyse_runs.py` turns the files into the tables and the CI tolerance.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xtask.tools.check_determinism import copy_repository  # noqa: E402
from xtask.tools.check_metrics import tolerance_name  # noqa: E402

SEEDS = range(5)
VARIANTS: dict[str, tuple[dict, dict]] = {  # name -> (synthetic section.key changes with `seeds`, environment)
    **{f"original-s{k}": ({"seeds": [k]}, {}) for k in SEEDS},
    **{f"corrected-s{k}": ({"seeds": [k], "protocol.name": "corrected"}, {}) for k in range(3)},
    **{f"bf16-s{k}": ({"seeds": [k], "protocol.amp": "bf16"}, {}) for k in range(3)},
    "kernels-avx2": ({"seeds": [0]}, {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    "kernels-nosimd": ({"seeds": [0]}, {"ATEN_CPU_CAPABILITY": "default"}),
    "kernels-sse41": ({"seeds": [0]}, {"ONEDNN_MAX_CPU_ISA": "SSE41"}),
    "kernels-1thread": ({"seeds": [0]}, {"OMP_NUM_THREADS": "1"}),
}
def _edit(changes: dict) -> Callable[[dict], None]:
    def edit(params: dict) -> None:
        params["seeds"] = changes.get("seeds", params["seeds"])
        for key, value in changes.items():  # section.key of the synthetic section
            if key != "seeds":
                section, name = key.split(".")
                params["synthetic"][section][name] = value
    return edit


def _metrics(repo: Path) -> dict:
    out = {}
    for root in ("metrics", "dvclive"):
        for path in sorted((repo / root).rglob("*.json")):
            name = tolerance_name(path.relative_to(repo).as_posix())
            if not name.endswith("inference.json"):
                out[name] = json.loads(path.read_text())
    return out


def run(name: str, out_dir: Path) -> None:
    target = out_dir / f"{name}.json"
    if target.exists():
        print(f"{name}: {target} exists, skipped", flush=True)
        return
    changes, env_changes = VARIANTS[name]
    env = {**os.environ, "OMP_NUM_THREADS": "2", **env_changes,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": ""}
    with tempfile.TemporaryDirectory(prefix=f"xtask-{name}-") as tmp:
        repo = Path(tmp)
        copy_repository(ROOT, repo, _edit(changes), name)
        start = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "dvc", "repro", "report"], cwd=repo, env=env, capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise SystemExit(f"{name}: dvc repro failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        result = {"variant": name, "changes": changes, "environment": env_changes,
                  "seconds": round(time.monotonic() - start, 1), "metrics": _metrics(repo)}
    out_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{name}: {result['seconds']} s -> {target}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", help=f"default: all ({', '.join(VARIANTS)})")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs")
    args = parser.parse_args()
    for name in args.variants or VARIANTS:
        if name not in VARIANTS:
            raise SystemExit(f"error: unknown variant {name!r} (known: {', '.join(VARIANTS)})")
        run(name, args.out)


if __name__ == "__main__":
    main()
