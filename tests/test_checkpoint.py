import json
import pickle

import pytest
import torch

from diffupose.checkpoint import (CheckpointError, load_checkpoint, load_training_state, save_checkpoint,
                                  save_training_state)
from diffupose.diffusion import DiffusionConfig
from diffupose.model import ModelConfig, build_model


def _save(tmp_path, **cfg):
    model = build_model(ModelConfig(d_model=16, n_blocks=1, d_time=8, **cfg))
    save_checkpoint(tmp_path / "ck", model, DiffusionConfig(pose_scale=0.3), training={"lr": 1e-3})
    return model


def test_round_trip(tmp_path):
    model = _save(tmp_path)
    for path in (tmp_path / "ck", tmp_path / "ck.safetensors", tmp_path / "ck.json"):
        loaded, diffusion, cfg = load_checkpoint(path)
        assert diffusion.cfg.pose_scale == 0.3 and cfg["training"]["lr"] == 1e-3
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="config not found"):
        load_checkpoint(tmp_path / "nothing")
    _save(tmp_path)
    (tmp_path / "ck.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weights not found"):
        load_checkpoint(tmp_path / "ck")


def test_corrupt_and_malicious_weights(tmp_path):
    _save(tmp_path)
    w = tmp_path / "ck.safetensors"
    w.write_bytes(w.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "ck")

    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))

    w.write_bytes(pickle.dumps(Evil()))  # a pickle is never unpickled
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "ck")


def test_other_architecture(tmp_path):
    _save(tmp_path)
    cfg = json.loads((tmp_path / "ck.json").read_text())
    cfg["model"]["d_model"] = 32
    (tmp_path / "ck.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.update(format="other"), "not a diffupose checkpoint"),
    (lambda c: c.update(version=99), "newer"),
    (lambda c: c["model"].update(arch="transformer"), "bad config"),
    (lambda c: c["model"].update(extra=1), "unknown keys"),
    (lambda c: c.pop("diffusion"), "missing the 'diffusion'"),
    (lambda c: c["diffusion"].update(pose_scale=1e30), "pose_scale must be within"),
    (lambda c: c["model"].update(d_model=20000), "d_model must be within"),
    (lambda c: c["diffusion"].update(T=1e9), "T must be a whole number"),
])
def test_bad_configs(tmp_path, edit, match):
    _save(tmp_path)
    cfg = json.loads((tmp_path / "ck.json").read_text())
    edit(cfg)
    (tmp_path / "ck.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "ck")


def test_nan_weights_rejected(tmp_path):
    from safetensors.torch import load_file, save_file

    _save(tmp_path)
    state = load_file(str(tmp_path / "ck.safetensors"))
    k = next(iter(state))
    state[k] = torch.full_like(state[k], float("nan"))
    save_file(state, str(tmp_path / "ck.safetensors"))
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(tmp_path / "ck")


def test_training_state_is_loaded_safely(tmp_path):
    save_training_state(tmp_path / "state.pt", {"step": 3, "opt": {"m": torch.ones(2)}})
    assert load_training_state(tmp_path / "state.pt")["step"] == 3

    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pwned')",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a readable training state"):
        load_training_state(tmp_path / "evil.pt")


def test_integer_weights_rejected(tmp_path):
    """An integer tensor would be cast silently (every weight rounded): refused from the header."""
    from safetensors.torch import load_file, save_file

    _save(tmp_path)
    state = load_file(str(tmp_path / "ck.safetensors"))
    k = sorted(state)[0]
    state[k] = (state[k] * 10).to(torch.int64)
    save_file(state, str(tmp_path / "ck.safetensors"))
    with pytest.raises(CheckpointError, match=f"weights must be floating point, but {k} is I64"):
        load_checkpoint(tmp_path / "ck")
