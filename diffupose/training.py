"""Training: the denoiser on (x_t, y, t) with L1(eps) + lambda L1(y), the paper's recipe by default.

The training set lives on the training device as tensors and a batch is an index gather (a
per-sample Python loader would be the bottleneck at GPU speed). Flip augmentation mirrors a random
half of each batch. Adam with a per-epoch exponential learning-rate decay, EMA weights (evaluated
and exported), AMP (bf16 where supported), atomic checkpoints (safetensors + JSON for the EMA
model, a weights_only torch file for the full training state), `resume` that continues exactly
(mid-epoch too: the epoch's permutation and the RNG states are saved), a progress bar, a CSV log,
and DistributedDataParallel under torchrun (NCCL on GPU, gloo on CPU).
"""
from __future__ import annotations

import csv
import ctypes
import gc
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from .checkpoint import load_training_state, save_checkpoint, save_training_state
from .diffusion import Diffusion, DiffusionConfig, joint_weights
from .model import ModelConfig, build_model, is_regressor
from .skeleton import Skeleton, flip_pose

__all__ = ["TrainConfig", "TrainData", "Trainer", "amp_dtype", "init_distributed"]


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 1024
    lr: float = 4e-5
    lr_decay: float = 0.995  # per epoch
    ema_decay: float = 0.999  # per step
    flip: bool = True
    amp: str = "auto"  # auto | bf16 | fp16 | off
    seed: int = 0
    save_every: int = 0  # steps between mid-epoch checkpoints (0: at the end of each epoch only)
    max_steps: int = 0  # stop after this many steps (0: no limit); for smoke tests
    grad_clip: float = 0.0
    backend: Optional[str] = None  # op backend for training (None: auto)
    # the forward and the loss through torch.compile(fullgraph=True) around the fused ops (their fake
    # kernels keep them whole in the graph): the Python and the small ops between them compiled away;
    # the first step compiles (seconds). bench/train_throughput.py's cpu+compile row.
    compile: bool = False
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainData:
    """Normalised tensors on the training device: x0 [N, J, 3] (metres / pose_scale), y [N, J, 2]."""

    x0: Tensor
    y: Tensor
    skeleton: Skeleton

    @classmethod
    def from_poseset(cls, ps, pose_scale: float, device) -> "TrainData":
        x0 = torch.as_tensor(ps.pose3d, dtype=torch.float32, device=device) / pose_scale
        y = torch.as_tensor(ps.pose2d, dtype=torch.float32, device=device)
        if x0.shape[:2] != y.shape[:2]:
            raise ValueError(f"3D {tuple(x0.shape)} and 2D {tuple(y.shape)} poses do not pair up")
        if not (torch.isfinite(x0).all() and torch.isfinite(y).all()):
            raise ValueError("training data contains NaN or infinite values")
        return cls(x0, y, ps.skeleton)

    def __len__(self) -> int:
        return self.x0.shape[0]

    def batch(self, idx: Tensor, flip_mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        x0, y = self.x0[idx], self.y[idx]
        if flip_mask is not None:
            m = flip_mask[:, None, None]
            x0 = torch.where(m, flip_pose(x0, self.skeleton), x0)
            y = torch.where(m, flip_pose(y, self.skeleton), y)
        return x0, y


def ema_warmup_fn(decay: float):
    """EMA with warm-up: the decay after n updates is min(decay, (1 + n) / (10 + n)).

    A plain EMA starts from the initial weights; at decay 0.999 a run of a few thousand steps
    (the CPU recipe) keeps e^-2 of its weight on the first, random, parameters, and an average
    of parameters from far apart on the trajectory is not a good network: measured on the
    embedded CMU set after 1,980 steps, the plain EMA's noise error at t = 50 was 3.4x the raw
    model's. The warm-up follows the raw weights early and reaches `decay` after ~10k steps.
    """
    @torch.no_grad()
    def update(ema_params, params, n_averaged):
        if not ema_params[0].is_floating_point():  # an integer buffer (a counter) is not averaged
            torch._foreach_copy_(ema_params, params)
            return
        n = n_averaged.to(ema_params[0].dtype)  # a device tensor: no host sync per step
        d = torch.clamp((1.0 + n) / (10.0 + n), max=decay)
        torch._foreach_mul_(ema_params, d)
        torch._foreach_add_(ema_params, torch._foreach_mul(params, 1.0 - d))

    return update


def _dist():
    """(rank, world size) when running under torchrun, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device_type: str) -> bool:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return True


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def hold_heap() -> bool:
    """Keep freed memory in the process's heap for the next training step (glibc; elsewhere a no-op,
    False). A step frees and allocates the same tens of MB of activations; glibc handed the large
    blocks back to the OS (mmap'd blocks, a trimmed heap top) and took them again as fresh zeroed
    pages: ~2,200 page faults a step at d 128, batch 256 on the CPU (perf stat: 605k -> 171k over 200
    steps). Blocks up to 32 MB (glibc's largest mmap threshold) then come from the heap and the heap
    is not trimmed below 1 GB: the process keeps its peak memory, as a training run does anyway.
    Process-wide, so Trainer.run and bench/train_throughput.py (for every row alike) call it."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam, fused where torch has the kernel (CPU and CUDA float parameters): one pass per parameter
    for the whole update instead of ~10 ATen calls each (0.44 against 2.1 ms a step for the d 128,
    3-block GCN's 64 tensors on the 2-core CPU: 2-3% of its training step). Same update, same state."""
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def amp_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    if mode != "auto":
        raise ValueError(f"amp must be auto, bf16, fp16 or off; got {mode!r}")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None  # on the CPU fp32 is the faster and safer choice


class Trainer:
    """Owns the model, EMA, optimizer and the loop. `run()` trains to the end (or max_steps)."""

    def __init__(self, model_cfg: ModelConfig, diff_cfg: DiffusionConfig, train_cfg: TrainConfig, data: TrainData,
                 out_dir: Path, device: torch.device, meta: Optional[dict] = None):
        self.mcfg, self.dcfg, self.cfg = model_cfg, diff_cfg, train_cfg
        self.data, self.out_dir, self.device = data, Path(out_dir), device
        self.meta = meta or {}
        self.rank, self.world = _dist()
        torch.manual_seed(train_cfg.seed)
        self.model = build_model(model_cfg).to(device)
        self.diffusion = Diffusion(diff_cfg)
        self.weights = joint_weights(diff_cfg.joint_weights, self.model.skeleton).to(device)
        # use_buffers: a batch norm's running statistics are averaged with the weights; without it the
        # EMA copy kept the statistics of step 0 (mean 0, var 1) and scored 2x the raw weights' error
        self.ema = torch.optim.swa_utils.AveragedModel(self.model, multi_avg_fn=ema_warmup_fn(train_cfg.ema_decay),
                                                       use_buffers=True)
        self.opt = adam(self.model.parameters(), train_cfg.lr)
        self.sched = torch.optim.lr_scheduler.ExponentialLR(self.opt, gamma=train_cfg.lr_decay)
        self.net: nn.Module = self.model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.amp = amp_dtype(train_cfg.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == torch.float16)
        self.epoch, self.step, self.batch_in_epoch = 0, 0, 0
        self.perm: Optional[Tensor] = None
        # the running sums of the epoch's log row, saved with the state so that a resumed epoch
        # logs the mean over all of its batches, as an uninterrupted run does
        self.epoch_sums: dict[str, float] = {}
        self.epoch_batches = 0
        self.epoch_seconds = 0.0
        self.gen = torch.Generator(device=device).manual_seed(train_cfg.seed + 1)  # batches and flips
        # the loss through torch.compile (--compile), None when eager or after a compile failure
        self._compiled_loss = torch.compile(self.loss, fullgraph=True, dynamic=False) if train_cfg.compile else None

    # -- state -----------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out_dir / "train_state.pt"

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "scaler": self.scaler.state_dict(), "epoch": self.epoch,
                "step": self.step, "batch_in_epoch": self.batch_in_epoch, "perm": self.perm,
                "epoch_sums": dict(self.epoch_sums), "epoch_batches": self.epoch_batches,
                "epoch_seconds": self.epoch_seconds,
                "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "model_cfg": self.mcfg.to_dict(), "diffusion_cfg": self.dcfg.to_dict(), "train_cfg": self.cfg.to_dict()}

    def load_state_dict(self, st: dict) -> None:
        # through from_dict: a state saved before a config field existed reads with that field's old meaning
        saved = ModelConfig.from_dict(st["model_cfg"])
        if saved != self.mcfg or st["diffusion_cfg"] != self.dcfg.to_dict():
            raise ValueError("resume: the checkpoint was trained with another model or diffusion config "
                             f"({saved.to_dict()}, {st['diffusion_cfg']})")
        self.model.load_state_dict(st["model"])
        self.ema.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["opt"])
        self.sched.load_state_dict(st["sched"])
        self.scaler.load_state_dict(st["scaler"])
        self.epoch, self.step, self.batch_in_epoch = st["epoch"], st["step"], st["batch_in_epoch"]
        self.perm = st["perm"].to(self.device) if st["perm"] is not None else None
        # states of older versions lack the sums: the resumed epoch's row then averages fewer batches
        self.epoch_sums = {k: float(v) for k, v in st.get("epoch_sums", {}).items()}
        self.epoch_batches = int(st.get("epoch_batches", 0))
        self.epoch_seconds = float(st.get("epoch_seconds", 0.0))
        self.gen.set_state(st["gen"])
        torch.set_rng_state(st["torch_rng"])
        if st["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(st["cuda_rng"])

    def resume(self) -> bool:
        """Continue from out_dir/train_state.pt if it exists; True if resumed. The log keeps the
        rows of the epochs the state completed: a row for a later or unfinished epoch (written
        after the last save, or for an epoch cut short by max_steps) is dropped and logged again
        in full when the epoch ends."""
        if not self.state_path.exists():
            return False
        self.load_state_dict(load_training_state(self.state_path))
        if self.rank == 0:
            _drop_csv_rows_after(self.out_dir / "log.csv", self.epoch)
        return True

    def save(self) -> None:
        if self.rank != 0:
            return
        save_training_state(self.state_path, self.state_dict())
        self.export(self.out_dir / "model")

    def export(self, stem: Path, metrics: Optional[dict] = None) -> None:
        """The EMA weights as a loadable checkpoint."""
        save_checkpoint(stem, self.ema_model(), self.dcfg, training={**self.cfg.to_dict(), "epoch": self.epoch,
                                                                      "step": self.step},
                        dataset=self.meta.get("dataset"), metrics=metrics)

    def ema_model(self) -> nn.Module:
        return self.ema.module

    # -- loop ------------------------------------------------------------------------------------
    def _steps_per_epoch(self) -> int:
        return max(1, len(self.data) // (self.cfg.batch_size * self.world))

    def _new_epoch_perm(self) -> Tensor:
        return torch.randperm(len(self.data), generator=self.gen, device=self.device)

    def loss(self, x0: Tensor, y: Tensor) -> tuple[Tensor, dict]:
        net, backend = self.net, self.cfg.backend
        if is_regressor(self.mcfg):
            # the deterministic baseline: per-joint weighted mean joint distance (MPJPE-style)
            err = (net(y, backend=backend).float() - x0).norm(dim=-1)
            loss = (err * self.weights).mean()
            return loss, {"loss": loss.detach()}
        return self.diffusion.loss(lambda a, b, c: net(a, b, c, backend=backend), x0, y, self.weights)

    def _compiled_or_eager_loss(self, x0: Tensor, y: Tensor) -> tuple[Tensor, dict]:
        """The loss through torch.compile (--compile); if compiling fails on this machine (no C++
        compiler for inductor, an unsupported construct), one note and the eager loss from then on:
        the same math, ~10% slower on the CPU, never a dead run."""
        if self._compiled_loss is None:
            return self.loss(x0, y)
        try:
            return self._compiled_loss(x0, y)
        except Exception as e:  # noqa: BLE001 (any compiler failure; the eager retry re-raises real errors)
            first = (str(e).strip().splitlines() or [""])[0][:200]
            print(f"note: torch.compile of the training step failed ({type(e).__name__}: {first}); training "
                  "continues without it", file=sys.stderr, flush=True)
            self._compiled_loss = None
            return self.loss(x0, y)

    def train_step(self, idx: Tensor) -> dict:
        self.net.train()  # an evaluation in between (the Lifter, predict) leaves the model in eval mode
        flip_mask = (torch.rand(idx.shape[0], generator=self.gen, device=self.device) < 0.5) if self.cfg.flip else None
        x0, y = self.data.batch(idx, flip_mask)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            loss, info = self._compiled_or_eager_loss(x0, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step}; lower the learning rate or "
                                     "disable AMP (--amp off)")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.ema.update_parameters(self.model)
        self.step += 1
        return info

    def run(self, log_every_epoch=None) -> None:
        # Python's cyclic GC walked every object of torch and the model on its older generations
        # (~2.5% of a CPU training step in perf); frozen, it walks only what the steps allocate
        hold_heap()
        gc.collect()
        gc.freeze()
        try:
            self._run(log_every_epoch)
        finally:
            gc.unfreeze()

    def _run(self, log_every_epoch) -> None:
        from tqdm.auto import tqdm

        cfg = self.cfg
        spe = self._steps_per_epoch()
        log_path = self.out_dir / "log.csv"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        done = False
        while self.epoch < cfg.epochs and not done:
            if self.perm is None or self.batch_in_epoch == 0:
                self.perm = self._new_epoch_perm()
                self.epoch_sums, self.epoch_batches, self.epoch_seconds = {}, 0, 0.0
            sums = self.epoch_sums  # restored by resume() mid-epoch
            t0 = time.time() - self.epoch_seconds
            bar = tqdm(total=spe, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                       disable=not cfg.progress or self.rank != 0, leave=False)
            while self.batch_in_epoch < spe:
                b = self.batch_in_epoch
                # this rank's share of the global batch b
                start = (b * self.world + self.rank) * cfg.batch_size
                info = self.train_step(self.perm[start:start + cfg.batch_size])
                for k, v in info.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                self.batch_in_epoch += 1
                self.epoch_batches += 1
                bar.update(1)
                bar.set_postfix(loss=f"{float(info['loss']):.4f}")
                if cfg.max_steps and self.step >= cfg.max_steps:
                    done = True
                    break
                if cfg.save_every and self.step % cfg.save_every == 0 and self.batch_in_epoch < spe:
                    self.epoch_seconds = time.time() - t0
                    self.save()
            bar.close()
            self.epoch_seconds = time.time() - t0
            row = {"epoch": self.epoch + 1, "step": self.step, "lr": self.opt.param_groups[0]["lr"],
                   **{k: v / max(self.epoch_batches, 1) for k, v in sums.items()},
                   "seconds": round(self.epoch_seconds, 2)}
            if self.batch_in_epoch >= spe:  # the epoch is complete
                self.epoch += 1
                self.batch_in_epoch = 0
                self.sched.step()
            if log_every_epoch is not None and self.rank == 0:
                row.update(log_every_epoch(self) or {})
            if self.rank == 0:
                _append_csv(log_path, row)
                if cfg.progress:
                    print("  ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                          flush=True)
            self.save()


def _read_csv(path: Path) -> tuple[list[dict], list[str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader), list(reader.fieldnames or [])


def _append_csv(path: Path, row: dict) -> None:
    """Append a row; the header is the first row's keys (later extra keys are appended as new
    columns by rewriting the header, so a metric first logged late is not lost)."""
    rows = []
    fields = list(row)
    if path.exists():
        rows, old = _read_csv(path)
        fields = old + [k for k in row if k not in old]
    _write_csv(path, rows + [row], fields)


def _drop_csv_rows_after(path: Path, epoch: int) -> None:
    """Keep the log rows of epochs 1..epoch (the header as it is)."""
    if not path.exists():
        return
    rows, fields = _read_csv(path)
    kept = [r for r in rows if str(r.get("epoch", "")).isdigit() and int(r["epoch"]) <= epoch]
    if len(kept) != len(rows):
        _write_csv(path, kept, fields)


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    """Atomically (a temporary renamed): a kill mid-write leaves the old log."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
