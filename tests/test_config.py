import copy
from pathlib import Path

import pytest
import yaml

from xtask.common.config import load_params, parse_params
from xtask.common.errors import XTaskError

BASE = yaml.safe_load(open("params.yaml"))


def test_the_shipped_params_are_valid_and_pin_the_readme_values():
    p = load_params("params.yaml")
    cs, nyu = p.dataset("cityscapes"), p.dataset("nyu")
    assert (cs.data.height, cs.data.width, cs.optim.epochs, cs.optim.batch_size, cs.optim.scheduler_step_size,
            cs.optim.scheduler_gamma) == (128, 256, 250, 8, 80, 0.5)
    assert (cs.loss.alpha, cs.loss.gamma, cs.model.enc_layers, cs.balancing.weighting, cs.data.num_classes) == \
        (0.01, 0.01, 34, "uncertainty", 7)
    assert (cs.loss.lp, cs.loss.tdep_loss, cs.loss.tseg_loss, cs.optim.lr, cs.optim.betas) == \
        ("L1", "L1", "cross", 1e-4, (0.9, 0.99))
    assert (nyu.data.height, nyu.data.width, nyu.optim.epochs, nyu.optim.batch_size,
            nyu.optim.scheduler_step_size) == (288, 384, 100, 6, 60)
    assert (nyu.loss.alpha, nyu.loss.gamma, nyu.model.enc_layers, nyu.balancing.weighting, nyu.data.num_classes) == \
        (0.0001, 0.0001, 34, "uncertainty", 13)
    assert p.run == ("synthetic",) and p.seeds == (0,)


def _with(path, value):
    raw = copy.deepcopy(BASE)
    node = raw
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return raw


@pytest.mark.parametrize("path,value,message", [
    ("cityscapes.model.enc_layers", 20, "cityscapes.model.enc_layers: expected one of [18, 34, 50, 101, 152], got 20"),
    ("cityscapes.loss.lp", "L3", "cityscapes.loss.lp: expected one of"),
    ("cityscapes.optim.lr", -0.1, "cityscapes.optim.lr: expected a number > 0"),
    ("cityscapes.data.height", 100, "cityscapes.data.height: expected a multiple of 32"),
    ("cityscapes.optim.batch_size", 0, "cityscapes.optim.batch_size: expected an integer >= 1"),
    ("cityscapes.optim.batch_size", "8", "cityscapes.optim.batch_size: expected an integer"),
    ("cityscapes.init.use_pretrain", "yes", "cityscapes.init.use_pretrain: expected true or false"),
    ("cityscapes.data.num_classes", 13, "cityscapes.data.num_classes: expected one of [7, 19]"),
    ("nyu.data.num_classes", 7, "nyu.data.num_classes: expected one of [13]"),
    ("nyu.optim.betas", [0.9], "nyu.optim.betas: expected a list of two numbers"),
    ("nyu.balancing.weighting", "dwa", "nyu.balancing.weighting: expected one of ['none', 'uncertainty', 'gradnorm']"),
    ("nyu.optim", [1, 2], "nyu.optim: expected a mapping with keys epochs, batch_size, lr"),
    ("synthetic.generate.n_train", 0, "synthetic.generate.n_train: expected an integer >= 1"),
    ("run", ["kitti"], "run: expected names of dataset sections"),
    ("seeds", [], "seeds: expected a non-empty list"),
    ("nyu.protocol.name", "paper", "nyu.protocol.name: expected one of ['original', 'corrected'], got 'paper'"),
    ("nyu.protocol.corrections", ["tidy_masks"], "nyu.protocol.corrections: expected one of ['rescale_inverse_depth'"),
    ("nyu.protocol.corrections", "aligned_masks", "nyu.protocol.corrections: expected a list without repeats of"),
    ("nyu.protocol.amp", True, "nyu.protocol.amp: expected one of ['auto', 'off', 'bf16', 'fp16'], got True"),
])
def test_bad_values_name_the_key(path, value, message):
    with pytest.raises(XTaskError) as err:
        parse_params(_with(path, value))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_and_missing_keys():
    raw = _with("cityscapes.optim.learning_rate", 0.1)
    with pytest.raises(XTaskError, match=r"cityscapes.optim.learning_rate: unknown key \(allowed: epochs, batch_size"):
        parse_params(raw)
    # a key of the flat layout before the sections: named, with the sections that are allowed
    with pytest.raises(XTaskError, match=r"cityscapes.lr: unknown key \(allowed: data, model, loss, optim"):
        parse_params(_with("cityscapes.lr", 0.1))
    raw = copy.deepcopy(BASE)
    del raw["nyu"]["optim"]["epochs"]
    with pytest.raises(XTaskError, match="nyu.optim.epochs: missing"):
        parse_params(raw)
    raw = copy.deepcopy(BASE)
    del raw["nyu"]["loss"]
    with pytest.raises(XTaskError, match="nyu.loss: missing"):
        parse_params(raw)


def test_gradnorm_refuses_fp16_and_the_original_ssim_spelling_is_read():
    raw = _with("cityscapes.balancing.weighting", "gradnorm")
    raw["cityscapes"]["protocol"]["amp"] = "fp16"
    with pytest.raises(XTaskError, match="cityscapes.protocol.amp: fp16 loss scaling is not supported with gradnorm"):
        parse_params(raw)
    p = parse_params(_with("cityscapes.loss.tdep_loss", "ssim"))
    assert p.dataset("cityscapes").loss.tdep_loss == "SSIM"


def test_replace_changes_keys_by_name_and_validates_them():
    from xtask.common.config import replace
    cfg = load_params("params.yaml").dataset("synthetic")
    changed = replace(cfg, lr=0.5, decoder_width=8, **{"protocol.name": "corrected"})
    assert (changed.optim.lr, changed.model.decoder_width, changed.protocol.name) == (0.5, 8, "corrected")
    assert changed.loss == cfg.loss and changed.data == cfg.data
    with pytest.raises(XTaskError, match="synthetic.data.height: expected a multiple of 32"):
        replace(cfg, height=33)
    with pytest.raises(XTaskError, match="learning_rate: no such key"):
        replace(cfg, learning_rate=0.1)


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("run: [synthetic\n")
    with pytest.raises(XTaskError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(XTaskError, match="not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path,value,message", [
    ("launch.where", "k8s", "launch.where: expected one of ['host', 'docker', 'slurm'], got 'k8s'"),
    ("launch.slurm.gpus", 2, "launch.slurm.gpus: unknown key"),
    ("launch.slurm.sbatch", "--time=1:00:00", "launch.slurm.sbatch: expected a list of sbatch options"),
    ("launch.slurm.sbatch", ["--partition gpu"], "launch.slurm.sbatch: expected options written as --name=value"),
    ("launch.slurm.sbatch", ["--array=0-3"], "launch.slurm.sbatch: expected no option the sweep sets itself"),
    ("launch.slurm.sbatch", ["-o", "x.log"], "launch.slurm.sbatch: expected no option the sweep sets itself"),
    ("launch.slurm.stop_before_limit_s", 10, "launch.slurm.stop_before_limit_s: expected an integer >= 60"),
    ("launch.slurm.dir", "", "launch.slurm.dir: expected a non-empty string"),
    ("launch.nproc_per_node", 0, "launch.nproc_per_node: expected an integer >= 1"),
    ("launch.gpus", 2, "launch.gpus: unknown key"),
    ("methods", ["xtask", "mtan"], "methods: expected one of ['xtask', 'mtl', 'stl_seg', 'stl_depth'], got 'mtan'"),
    ("methods", ["xtask", "xtask"], "methods: expected a list without repeats"),
])
def test_launch_and_methods_are_validated(path, value, message):
    with pytest.raises(XTaskError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_params(_with(path, value))


def test_the_paper_sections_train_as_the_original_did_in_fp32():
    p = load_params("params.yaml")
    for name in ("cityscapes", "nyu", "synthetic"):
        d = p.dataset(name)
        assert (d.protocol.name, d.protocol.corrections, d.protocol.amp) == ("original", (), "off"), name


def test_a_bare_yaml_off_is_off():
    # YAML 1.1 reads `amp: off` and `channels_last: on` as booleans
    d = parse_params(_with("nyu.protocol.amp", False)).dataset("nyu")
    assert d.protocol.amp == "off"
    assert parse_params(_with("nyu.runtime.channels_last", True)).dataset("nyu").runtime.channels_last == "on"


def test_corrections_add_to_protocol_original_only():
    from xtask.core.protocol import PROTOCOLS, protocol_of
    raw = _with("nyu.protocol.corrections", ["mask_missing_depth", "normalise_nyu_input"])
    nyu = parse_params(raw).dataset("nyu")
    got = protocol_of(nyu.protocol)
    assert got.mask_missing_depth and got.normalise_nyu_input and not got.aligned_masks
    assert got.name == "original+mask_missing_depth+normalise_nyu_input"
    assert protocol_of(parse_params(_with("nyu.protocol.name", "corrected")).dataset("nyu").protocol) == \
        PROTOCOLS["corrected"]
    raw["nyu"]["protocol"]["name"] = "corrected"
    with pytest.raises(XTaskError, match=r"nyu.protocol.corrections: expected \[\] unless protocol.name is original"):
        parse_params(raw)


def test_numbers_as_dvc_writes_them_and_as_users_write_them_are_numbers(tmp_path):
    # `dvc exp run -S nyu.lr=0.00005` rewrites params.yaml through this very function (DVC's -S path),
    # which writes `lr: 5e-05` and a bare `amp: off`; YAML 1.1 would read the first as a string
    from dvc.utils.hydra import apply_overrides
    params = tmp_path / "params.yaml"
    params.write_text(Path("params.yaml").read_text())
    apply_overrides(params, ["nyu.optim.lr=0.00005", "nyu.protocol.amp=off", "nyu.runtime.channels_last=on",
                             "cityscapes.optim.lr=0.001"])
    text = params.read_text()
    assert "lr: 5e-05" in text and "amp: off," in text and "channels_last: on\n" in text
    p = load_params(params)
    assert p.dataset("nyu").optim.lr == 5e-05 and p.dataset("cityscapes").optim.lr == 0.001
    assert (p.dataset("nyu").protocol.amp, p.dataset("nyu").runtime.channels_last) == ("off", "on")
    # by hand: an exponent without a dot, and the booleans YAML 1.1 made of on/off, written as such
    params.write_text(text.replace("lr: 5e-05", "lr: 1e-3").replace('amp: "off",', "amp: false,", 1))
    p = load_params(params)
    assert p.dataset("nyu").optim.lr == 1e-3 and isinstance(p.dataset("nyu").optim.lr, float)
    assert p.dataset("synthetic").protocol.amp == "off"


def test_bad_yaml_is_one_line_with_its_line_number(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("run: [synthetic]\nseeds: [0]\nsynthetic:\n  lr: [0.1\n")
    with pytest.raises(XTaskError, match=r"^.*params.yaml: not valid YAML at line \d+$"):
        load_params(bad)
    bad.write_text("run: [synthetic]\nseeds: [0]\nseeds: [1]\n")
    with pytest.raises(XTaskError, match=r"params.yaml: not valid YAML at line 3"):
        load_params(bad)
