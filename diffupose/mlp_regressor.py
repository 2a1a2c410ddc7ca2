"""The fully connected 2D-to-3D regressor of Martinez et al. (ICCV 2017, "A simple yet effective
baseline for 3D human pose estimation"), the reference a lifter has to beat, and its recipe.

MLPRegressor (arch "mlp_regressor"): J x 2 -> width (1024) -> n_blocks (2) residual blocks of
[Linear, BatchNorm (layers.ChannelBatchNorm: float buffers only, as the
checkpoints and the EMA want), ReLU, Dropout 0.5] x 2 -> J x 3; 4.3 M parameters at 17 joints. It trains through
the project's Trainer (the regressors' loss: per-joint weighted mean joint distance; Adam with a
per-epoch learning-rate decay, EMA, flip augmentation) and is scored by diffupose.evaluate like
every model, so its numbers stand beside the GCN's. `main` is `train/baselines.py`: the training
command line of diffupose.recipes with the baseline's recipe as its defaults.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .layers import ChannelBatchNorm
from .model import ModelConfig
from .skeleton import get_skeleton

DROPOUT = 0.5  # Martinez et al.'s value
# Martinez et al.'s size and optimiser (Adam 1e-3 with an exponential decay); the epochs, batch and
# decay per epoch are the CMU/CPU recipe's (diffupose.recipes.CMU_CPU) so that both train alike
MLP_RECIPE = ["--arch", "mlp_regressor", "--d-model", "1024", "--blocks", "2", "--lr", "1e-3", "--lr-decay", "0.95"]


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(width, width), ChannelBatchNorm(width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(width, width), ChannelBatchNorm(width), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, h: Tensor) -> Tensor:
        return h + self.body(h)


class MLPRegressor(nn.Module):
    """y [B, J, 2] (screen-normalised) -> x0 [B, J, 3] (root-relative / pose_scale), deterministic.
    cfg.d_model is the width, cfg.n_blocks the residual blocks; cfg.norm does not apply (batch norm
    is part of the architecture)."""

    def __init__(self, cfg: ModelConfig, dropout: float = DROPOUT):
        super().__init__()
        self.cfg = cfg
        self.skeleton = get_skeleton(cfg.skeleton)
        J, width = self.skeleton.num_joints, cfg.d_model
        self.inp = nn.Sequential(nn.Linear(J * 2, width), ChannelBatchNorm(width), nn.ReLU(), nn.Dropout(dropout))
        self.blocks = nn.Sequential(*(_ResidualBlock(width, dropout) for _ in range(cfg.n_blocks)))
        self.out = nn.Linear(width, J * 3)

    def forward(self, y: Tensor, backend: Optional[str] = None) -> Tensor:  # backend: no custom ops here
        B, J, _ = y.shape
        h = self.blocks(self.inp(y.reshape(B, J * 2).float()))
        return self.out(h).view(B, J, 3)


def main(argv=None, default_dataset: str = "cmu") -> int:
    """Train and evaluate the MLP regressor: diffupose.recipes' command line, the baseline's recipe
    first so that any option given on the command line overrides it."""
    import sys

    from .recipes import main as train_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return train_main(MLP_RECIPE + argv, default_dataset=default_dataset)

