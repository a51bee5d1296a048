"""Which runs a results table may average: every metrics file names the run config it scores.

``config`` is what decided the model, seed aside (``xtask.training.resume.run_config``, carried by best.pt:
the train stage's params, the method, the prepared data's digest, the training code's hash), plus the
evaluation code's hash and any section of the params whose values differ from the training ones. ``config_id``
is its hash: seeds with one id are runs of one experiment; the report never averages across ids.
"""
from __future__ import annotations

import json
from typing import Any

from xtask.common.config import TRAINED, DatasetConfig
from xtask.common.digest import code_hash, config_hash
from xtask.core.weights import Weights

# The evaluate stage's code deps in dvc.yaml (tests/test_dependencies.py holds the two together).
EVALUATE_CODE = ("pipeline/evaluate.py", "xtask/common", "xtask/core", "xtask/evaluation")


def identity(weights: Weights, cfg: DatasetConfig) -> dict[str, Any]:
    """{"config_id", "config"} for a metrics file; empty for a checkpoint that does not say what decided it
    (the original's model.pth, a best.pt from before run configs): the report then counts no such file."""
    if weights.run_config is None:
        return {}
    config = {**weights.run_config, "evaluation_code": code_hash(EVALUATE_CODE)}
    for name, value in cfg.sections(TRAINED).items():
        if json.dumps(config.get(name), default=str) != json.dumps(value, default=str):
            config[f"evaluate.{name}"] = value  # scored under other params than it was trained with
    return {"config_id": config_hash(config), "config": config}
