"""The determinism check's comparison: every output of two runs, byte for byte, checkpoints by tensor."""
import torch

from xtask.tools.check_determinism import compare


def _run(root, depth=1.0, metric="55.1"):
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "seed0.json").write_text('{"miou": %s}' % metric)
    (root / "models").mkdir()
    torch.save({"model": {"w": torch.full((3,), depth)}, "epoch": 2}, root / "models" / "best.pt")
    return root


def test_identical_runs_are_the_same_file_by_file(tmp_path):
    a, b = _run(tmp_path / "a"), _run(tmp_path / "b")
    assert dict(compare(a, b)) == {"metrics/seed0.json": None, "models/best.pt": None}


def test_a_changed_number_a_changed_tensor_and_a_missing_file_are_named(tmp_path):
    a = _run(tmp_path / "a")
    b = _run(tmp_path / "b", depth=1.0 + 1e-7, metric="55.100000000001")
    (a / "metrics" / "extra.json").write_text("{}")
    assert dict(compare(a, b)) == {"metrics/extra.json": "only in the first run",
                                   "metrics/seed0.json": "bytes differ", "models/best.pt": "tensors differ"}
