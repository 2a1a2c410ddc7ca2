"""Evaluation: lift a test PoseSet with a model and report the paper's tables.

Predictions never see the ground truth: the N hypotheses are aggregated by their mean (or
per-joint median); the best-of-N oracle is computed by diffupose.metrics only for rows named
"oracle". Flip test-time augmentation is on by default, as in the paper.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from .diffusion import Diffusion
from .engine import Lifter
from .metrics import Evaluation, evaluate_poseset, format_table


@dataclass
class Prediction:
    mean: np.ndarray  # [F, J, 3] metres
    hypotheses: Optional[np.ndarray]  # [F, N, J, 3] metres (None for the regressor)
    seconds: float  # wall time of the lifting


@torch.no_grad()
def predict(model: nn.Module, diffusion: Diffusion, pose2d: np.ndarray, *, n_hyp: int = 1, steps: int = 5,
            sampler: str = "ddim", flip: bool = True, aggregate: str = "mean", batch_frames: int = 4096,
            device=None, backend: Optional[str] = None, seed: int = 0, dtype=torch.float32,
            progress: bool = False) -> Prediction:
    """Lift screen-normalised 2D poses [F, J, 2]."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    y = torch.as_tensor(np.asarray(pose2d), dtype=torch.float32, device=device)
    t0 = time.perf_counter()
    if model.cfg.arch == "regressor":
        from .skeleton import flip_pose

        out = model(y, backend=backend)
        if flip:
            out = 0.5 * (out + flip_pose(model(flip_pose(y, model.skeleton), backend=backend), model.skeleton))
        mean = (out * diffusion.cfg.pose_scale).cpu().numpy()
        return Prediction(mean, None, time.perf_counter() - t0)
    lifter = Lifter(model, diffusion, n_hyp=n_hyp, steps=steps, sampler=sampler, flip=flip, aggregate=aggregate,
                    batch_frames=batch_frames, device=device, backend=backend, seed=seed, dtype=dtype,
                    progress=progress)
    res = lifter(y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    return Prediction(res.mean.cpu().numpy(), res.hypotheses.cpu().numpy(), seconds)


def evaluate_model(model: nn.Module, diffusion: Diffusion, test, *, hypotheses: Sequence[int] = (1, 10),
                   steps: int = 5, sampler: str = "ddim", flip: bool = True, seed: int = 0, backend=None,
                   batch_frames: int = 4096, progress: bool = False, oracle: bool = True) -> dict[int, Evaluation]:
    """N -> Evaluation on the PoseSet `test` (per-action MPJPE / P-MPJPE; oracle rows where N > 1)."""
    out = {}
    ns = (1,) if model.cfg.arch == "regressor" else tuple(hypotheses)
    for n in ns:
        pred = predict(model, diffusion, test.pose2d, n_hyp=n, steps=steps, sampler=sampler, flip=flip, seed=seed,
                       backend=backend, batch_frames=batch_frames, progress=progress)
        ev = evaluate_poseset(pred.mean, test, pred.hypotheses if (oracle and n > 1) else None)
        ev.extra["seconds"] = pred.seconds
        ev.extra["fps"] = len(test) / max(pred.seconds, 1e-9)
        out[n] = ev
    return out


def tables(evals: dict[int, Evaluation], method: str = "DiffuPose", title: str = "") -> str:
    """Protocol #1 (MPJPE) and #2 (P-MPJPE) tables in Table I's layout, a row per N (and oracle)."""
    first = next(iter(evals.values()))
    parts = []
    for protocol, name in (("mpjpe", "Protocol #1: MPJPE (mm)"), ("p_mpjpe", "Protocol #2: P-MPJPE (mm)")):
        rows = {}
        for n, ev in evals.items():
            rows.update(ev.rows(f"{method} N={n}", protocol))
        parts.append(format_table(rows, first.actions, title=f"{title}{name}"))
    return "\n\n".join(parts)


def summary(evals: dict[int, Evaluation]) -> dict:
    """Flat numbers for logs and JSON: P1/P2 averages per N (and oracle ones, so named)."""
    out = {}
    for n, ev in evals.items():
        out[f"p1_n{n}"] = ev.mpjpe["Avg"]
        out[f"p2_n{n}"] = ev.p_mpjpe["Avg"]
        if ev.oracle_mpjpe is not None:
            out[f"oracle_p1_n{n}"] = ev.oracle_mpjpe["Avg"]
    return out


DEFAULT_CHECKPOINT = __import__("pathlib").Path(__file__).resolve().parent / "assets" / "checkpoints" / "cmu_gcn"


def table6(args, device) -> list[dict]:
    """Paper Table VI: frames per second and MPJPE against the number of sampler steps (DDIM 2, 5,
    10, 20; DDPM 100), for N = 1 and N = 10, on a dataset's test split (the embedded CMU set by
    default). FPS is test frames over the wall time of lifting them (batched, warm)."""
    from .checkpoint import load_checkpoint
    from .data.dataset import load_dataset

    model, diffusion, _ = load_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT, device)
    _, test = load_dataset(args.dataset, args.data_dir)
    if test.skeleton.name != model.cfg.skeleton:
        raise ValueError(f"the checkpoint is for {model.cfg.skeleton}, the dataset has {test.skeleton.name}")
    backend = None if args.backend == "auto" else args.backend
    rows = []
    print("| steps | sampler | N | frames/s | MPJPE (mm) | P-MPJPE (mm) |")
    print("|---:|---|---:|---:|---:|---:|")
    y = torch.as_tensor(test.pose2d, device=device)
    for steps in (2, 5, 10, 20, diffusion.T):
        sampler = "ddpm" if steps == diffusion.T else "ddim"
        for n in (1, 10):
            lifter = Lifter(model, diffusion, n_hyp=n, steps=steps, sampler=sampler, flip=True, batch_frames=4096,
                            backend=backend, device=device)
            with torch.no_grad():
                lifter(y[:4096])  # warm-up: kernels, inference caches, the captured graph
                t0 = time.perf_counter()
                res = lifter(y)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - t0
            ev = evaluate_poseset(res.mean.cpu().numpy(), test)
            row = {"steps": steps, "sampler": sampler, "hyp": n, "fps": len(test) / seconds,
                   "mpjpe": ev.mpjpe["Avg"], "p_mpjpe": ev.p_mpjpe["Avg"]}
            rows.append(row)
            print(f"| {steps} | {sampler} | {n} | {row['fps']:,.0f} | {row['mpjpe']:.1f} | {row['p_mpjpe']:.1f} |",
                  flush=True)
    return rows
