import json

import numpy as np
import pytest
import torch

from diffupose.mlp_regressor import MLPRegressor, main
from diffupose.checkpoint import load_checkpoint, save_checkpoint
from diffupose.diffusion import Diffusion, DiffusionConfig
from diffupose.model import ModelConfig, build_model, count_parameters, is_regressor


def test_martinez_size():
    """34 -> 1024, two residual blocks of two 1024 layers, -> 51: 4.3 M parameters (Martinez et al.)."""
    m = build_model(ModelConfig(arch="mlp_regressor", d_model=1024, n_blocks=2))
    assert isinstance(m, MLPRegressor) and is_regressor(m)
    lin = 34 * 1024 + 1024 + 4 * (1024 * 1024 + 1024) + 1024 * 51 + 51
    bn = 5 * 2 * 1024
    assert count_parameters(m) == lin + bn and 4.2e6 < count_parameters(m) < 4.4e6


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    torch.manual_seed(0)
    m = build_model(ModelConfig(arch="mlp_regressor", d_model=64, n_blocks=1))
    y = torch.randn(16, 17, 2)
    assert not torch.allclose(m(y), m(y))  # dropout
    m.eval()
    assert torch.equal(m(y), m(y))


def test_checkpoint_round_trip(tmp_path):
    """Its batch norms keep float buffers only, so the float-only weights check of the checkpoint
    reader accepts it, running statistics included."""
    torch.manual_seed(0)
    m = build_model(ModelConfig(arch="mlp_regressor", d_model=32, n_blocks=1))
    m(torch.randn(64, 17, 2))  # moves the running statistics
    save_checkpoint(tmp_path / "mlp", m, DiffusionConfig(pose_scale=0.3))
    loaded, diffusion, _ = load_checkpoint(tmp_path / "mlp")
    m.eval()
    y = torch.randn(8, 17, 2)
    assert torch.allclose(loaded(y), m(y)) and diffusion.cfg.pose_scale == 0.3


def test_predict_scores_it_once_per_frame_in_eval_mode():
    from diffupose.evaluate import predict

    torch.manual_seed(0)
    m = build_model(ModelConfig(arch="mlp_regressor", d_model=32, n_blocks=1))
    y = np.random.default_rng(0).uniform(-1, 1, (10, 17, 2)).astype(np.float32)
    a = predict(m, Diffusion(DiffusionConfig(pose_scale=0.3)), y)
    b = predict(m, Diffusion(DiffusionConfig(pose_scale=0.3)), y)
    assert a.hypotheses is None and a.mean.shape == (10, 17, 3) and np.array_equal(a.mean, b.mean)


def test_ema_follows_the_batch_norm_statistics(tmp_path):
    """The EMA copy averages the running statistics with the weights (it kept step 0's before)."""
    from diffupose.data.dataset import load_dataset
    from diffupose.training import TrainConfig, TrainData, Trainer

    train, _ = load_dataset("cmu", None, "gt")
    train = train.subset(np.arange(512))
    tr = Trainer(ModelConfig(arch="mlp_regressor", d_model=32, n_blocks=1), DiffusionConfig(pose_scale=0.3),
                 TrainConfig(epochs=1, batch_size=64, lr=1e-3, max_steps=5, progress=False),
                 TrainData.from_poseset(train, 0.3, torch.device("cpu")), tmp_path, torch.device("cpu"))
    tr.run()
    raw, ema = tr.model.inp[1].running_mean, tr.ema_model().inp[1].running_mean
    assert ema.abs().sum() > 0 and torch.allclose(ema, raw, atol=0.2 * raw.abs().max().item())


def test_train_baselines_command(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--max-steps", "2", "--out", str(out), "--no-progress", "--d-model", "32", "--downsample", "50"]) == 0
    text = capsys.readouterr().out
    assert "mlp_regressor N=1" in text
    cfg = json.loads((out / "model.json").read_text())
    assert cfg["model"]["arch"] == "mlp_regressor" and cfg["model"]["n_blocks"] == 2
    assert cfg["training"]["lr"] == pytest.approx(1e-3)


def test_diffupose_eval_scores_it_and_lift_refuses_it(tmp_path, capsys):
    """`diffupose eval` takes it as a regressor (one prediction per frame); `lift` says in one line
    that it needs a diffusion denoiser."""
    from diffupose.cli import main as cli

    torch.manual_seed(0)
    m = build_model(ModelConfig(arch="mlp_regressor", d_model=32, n_blocks=1))
    save_checkpoint(tmp_path / "mlp", m, DiffusionConfig(pose_scale=0.3))
    assert cli(["eval", "--checkpoint", str(tmp_path / "mlp"), "--max-frames", "50", "-q"]) == 0
    assert "mlp_regressor N=1" in capsys.readouterr().out
    kp = tmp_path / "kp.npy"
    np.save(kp, np.random.default_rng(0).uniform(0, 500, (3, 17, 2)))
    assert cli(["lift", str(kp), "-o", str(tmp_path / "o.npz"), "--checkpoint", str(tmp_path / "mlp"),
                "--image-size", "1000", "1000", "--layout", "h36m17"]) != 0
    err = capsys.readouterr().err
    assert "deterministic regressor (arch 'mlp_regressor')" in err and "Traceback" not in err
