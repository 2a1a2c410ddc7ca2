"""The model card's measurements on a tiny checkpoint (they run, name the oracle as such, and the
x0 diagnostic behaves as its definition says)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffupose.checkpoint import save_checkpoint
from diffupose.data.dataset import load_dataset
from diffupose.diffusion import Diffusion, DiffusionConfig
from diffupose.evaluate import subsample
from diffupose.model import ModelConfig, build_model
from diffupose.model_card import x0_error_by_timestep
from diffupose.skeleton import H36M17

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


class _Oracle(torch.nn.Module):
    """A denoiser that returns the true noise (it knows x0): x0_hat must equal x0 at every t."""

    def __init__(self, x0):
        super().__init__()
        self.x0, self.skeleton, self.ab = x0, None, None

    def forward(self, x, y, t, backend=None):
        ab = float(self.ab[t])
        return (x - ab ** 0.5 * self.x0) / (1 - ab) ** 0.5, y


def test_x0_error_is_zero_for_the_true_noise_and_grows_with_a_blind_denoiser():
    _, test = load_dataset("cmu")
    test, _ = subsample(test, 64)
    d = Diffusion(DiffusionConfig(T=100, pose_scale=0.3))
    model = _Oracle(torch.as_tensor(test.pose3d) / 0.3)
    model.ab, model.skeleton = d.alpha_bar, H36M17
    err = x0_error_by_timestep(model, d, test, (0, 50, 99), flip=False, batch=64)
    assert max(err.values()) < 0.05  # mm: exact up to float32
    class Blind(torch.nn.Module):
        skeleton = H36M17

        def forward(self, x, y, t, backend=None):
            return torch.zeros_like(x), y

    err = x0_error_by_timestep(Blind(), d, test, (0, 50, 99), flip=False, batch=64)
    assert err[0] < err[50] < err[99]  # x0_hat = x_t / sqrt(abar): the noise is left in


def test_model_card_script(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=16, n_blocks=1, d_time=8))
    save_checkpoint(tmp_path / "tiny", model, DiffusionConfig(T=20, clip_x0=2.0, pose_scale=0.3))
    reg = build_model(ModelConfig(arch="regressor", d_model=16, n_blocks=1, d_time=8))
    save_checkpoint(tmp_path / "reg", reg, DiffusionConfig(T=20, pose_scale=0.3))
    r = subprocess.run([sys.executable, str(ROOT / "train" / "model_card.py"), "--checkpoint", str(tmp_path / "tiny"),
                        "--baseline", f"GCN regressor={tmp_path / 'reg'}", "--max-frames", "40", "--sampler-frames",
                        "8", "--x0-frames", "16", "--keypoints", "gt", "--json", str(tmp_path / "c.json")],
                       capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin"})
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "c.json").read_text())
    assert list(doc["rows"]) == ["cmu+hdm05 test", "cmu test", "hdm05 test"]
    assert doc["frames"]["cmu test"] + doc["frames"]["hdm05 test"] == doc["frames"]["cmu+hdm05 test"] == 40
    rows = doc["rows"]["cmu test"]
    assert {"training mean pose", "GCN regressor", "DiffuPose N=1", "DiffuPose N=10, mean", "DiffuPose N=10, median",
            "oracle best of 10 (uses ground truth; not a prediction)"} <= set(rows)
    assert [(s["sampler"], s["steps"]) for s in doc["samplers"]["rows"][:5]] == [
        ("ddim", 2), ("ddim", 5), ("ddim", 10), ("ddim", 20), ("ddpm", 20)]
    assert "| t |" in r.stdout and np.isfinite(list(doc["x0_by_timestep"]["mpjpe_mm"].values())).all()
