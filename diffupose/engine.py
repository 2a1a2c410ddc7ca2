"""Multi-hypothesis lifting: 2D poses in, N 3D hypotheses per frame out, their aggregate and
per-joint spread. One object, `Lifter`, for every device:

- on CUDA the whole k-step loop (denoiser through the fused ops, fused sampler steps, the
  aggregation, flip test-time augmentation when asked) is captured in one CUDA graph per
  (frame bucket, every setting the loop bakes in) and replayed; inputs go through static
  buffers, frame counts are bucketed (powers of two up to batch_frames, the batch padded with
  its last frame) so varying clip lengths reuse a few graphs, at most `max_graphs` are kept
  (least recently used dropped, and their memory pools with them), and the noise is fresh on
  every replay because the sampler kernels read (seed, offset) from a device tensor that the
  graph itself advances. Graphs read the model's inference caches and parameters by address:
  they are dropped when any parameter or buffer changes (in place or replaced);
- on the CPU the whole loop of a GCNDenoiser is one op (diffupose.ops.sample: every layer of
  every step, the noise, flip, centring and aggregation); other models run the same loop
  eagerly through the C++ ops.

Both paths run `Diffusion.sample` on the same model and the same counter-based noise, so for the
same seed they agree to within the dtype's rounding. Nothing here reads ground truth: the
aggregate is the mean (or the per-joint median) of the hypotheses.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .diffusion import Diffusion, check_pose2d
from .ops.sample import center_on_root, fused_sampler_available, state_key
from .ops.sample import sample as fused_sample
from .skeleton import Skeleton

AGGREGATES = ("mean", "median")
SAMPLERS = ("ddim", "ddpm")


@dataclass
class LiftResult:
    """Root-relative camera-frame poses in metres."""

    mean: Tensor  # [F, J, 3] the aggregate (mean, or per-joint median if asked)
    hypotheses: Tensor  # [F, N, J, 3]
    spread: Tensor  # [F, J] RMS distance of the hypotheses from their mean

    def to(self, device) -> "LiftResult":
        return LiftResult(self.mean.to(device), self.hypotheses.to(device), self.spread.to(device))


def frame_bucket(frames: int, batch_frames: int) -> int:
    """Frames per denoiser call for a chunk of `frames`: the next power of two, at most
    batch_frames (full batches are batch_frames). Graphs (and the noise counters, eager or not)
    are per bucket, so clips of any length share a handful of graphs."""
    return min(batch_frames, 1 << max(0, frames - 1).bit_length())


def inference_cache_refs(model: nn.Module) -> list:
    """References to every inference-cache entry of the model (ModulatedGraphConv._affinity_cache,
    GCNDenoiser._cond_cache): a graph holds them so that a cache entry replaced after capture is
    not freed under it (its memory stays valid until the graph itself is dropped)."""
    refs = []
    for mod in model.modules():
        for name in ("_affinity_cache", "_cond_cache"):
            entry = getattr(mod, name, None)
            if entry is not None:
                refs.append(dict(entry) if isinstance(entry, dict) else entry)
    return refs


def cuda_device_guard(device: torch.device):
    """Make `device` current: torch.cuda.graph() captures the current device's stream, and the
    ops launch on their tensors' device's current stream; they must be one and the same."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class _CapturedLoop:
    """One captured sampling loop for a fixed number of frames per replay."""

    def __init__(self, run, frames: int, J: int, rng_state: Tensor, model: nn.Module):
        device = rng_state.device
        self.frames = frames
        with cuda_device_guard(device):
            self.y = torch.zeros(frames, J, 2, device=device)
            state0 = rng_state.clone()
            # warm up on a side stream (compiles Triton kernels, fills the model's inference caches
            # and the flip index tensors: nothing may be built from host data while capturing)
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                run(self.y)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = run(self.y)
            rng_state.copy_(state0)  # the warm-up's draws do not count: graph and eager runs agree
        self.cache_refs = inference_cache_refs(model)
        self.device = device

    def __call__(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n = y.shape[0]
        with cuda_device_guard(self.device):
            self.y[:n].copy_(y)
            if n < self.frames:  # ragged or short batch: pad with the last frame, results cut off below
                self.y[n:].copy_(y[-1:].expand(self.frames - n, -1, -1))
            self.graph.replay()
            return tuple(t[:n].clone() for t in self.out)


class Lifter:
    """Lift screen-normalised 2D poses [F, J, 2] to N hypotheses in metres.

    model: a denoiser (diffupose.model); diffusion: its Diffusion (schedule and pose_scale).
    n_hyp: hypotheses per frame; steps: DDIM steps (sampler 'ddim') or ignored for 'ddpm' (all T);
    eta: DDIM noise; flip: test-time flip augmentation (needs the skeleton); aggregate: 'mean' or
    'median'; batch_frames: frames per denoiser call (memory is ~ batch_frames * n_hyp samples);
    dtype: activation dtype of the denoiser (fp32, bf16, fp16); cuda_graph: capture on CUDA
    (default True there); seed: the noise seed (reproducible: same seed, same results);
    center_root: translate every hypothesis so its root joint is exactly at 0 (default; without
    it the mean and spread are the sampler kernel's own, the root only near 0); max_graphs: captured
    graphs kept (one per frame bucket and settings; least recently used dropped beyond it);
    fused_sampler: run the whole sampler as one op (diffupose.ops.sample: a GCNDenoiser on the
    CPU; default there), False for the per-layer ops.
    """

    def __init__(self, model: nn.Module, diffusion: Diffusion, *, n_hyp: int = 10, steps: int = 5,
                 sampler: str = "ddim", eta: float = 0.0, flip: bool = False, aggregate: str = "mean",
                 batch_frames: int = 1024, dtype: torch.dtype = torch.float32, cuda_graph: Optional[bool] = None,
                 seed: int = 0, backend: Optional[str] = None, device: Optional[torch.device] = None,
                 progress: bool = False, center_root: bool = True, max_graphs: int = 8,
                 fused_sampler: Optional[bool] = None):
        if n_hyp < 1 or steps < 1 or batch_frames < 1 or max_graphs < 1:
            raise ValueError(f"n_hyp, steps, batch_frames and max_graphs must be >= 1 (got {n_hyp}, {steps}, "
                             f"{batch_frames}, {max_graphs})")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {', '.join(AGGREGATES)}")
        self.model = model.eval()
        self.diffusion = diffusion
        self.skeleton: Skeleton = model.skeleton
        self.n_hyp, self.steps, self.sampler, self.eta = n_hyp, steps, sampler, eta
        self.flip, self.aggregate, self.dtype, self.backend = flip, aggregate, dtype, backend
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.batch_frames = batch_frames
        self.use_graph = (self.device.type == "cuda") if cuda_graph is None else bool(cuda_graph)
        if self.use_graph and self.device.type != "cuda":
            raise ValueError("cuda_graph=True needs a CUDA device")
        self.progress = progress
        self.center_root = center_root
        self.fused_sampler = fused_sampler
        self.root = self.skeleton.parents.index(-1)
        self.rng_state = torch.tensor([seed, 0], dtype=torch.int64, device=self.device)
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, _CapturedLoop] = OrderedDict()
        self._graphs_model_key: Optional[tuple] = None

    # -- noise ---------------------------------------------------------------------------------
    def reseed(self, seed: int) -> None:
        """Restart the noise stream (in place: captured graphs keep reading the same buffer)."""
        self.rng_state.copy_(torch.tensor([seed, 0], dtype=torch.int64))

    # -- the loop ------------------------------------------------------------------------------
    def _run(self, y: Tensor, chunk_frames: int) -> tuple[Tensor, Tensor, Tensor]:
        stride = chunk_frames * self.n_hyp * self.skeleton.num_joints * 3  # same counters padded or not
        args = dict(n_hyp=self.n_hyp, steps=self.steps, eta=self.eta, ddpm=self.sampler == "ddpm",
                    rng_state=self.rng_state, flip=self.skeleton if self.flip else None, dtype=self.dtype,
                    counter_stride=stride)
        # the whole loop as one op (diffupose.ops.sample) where it is built for this device and model
        fused = self.fused_sampler
        if fused is None:
            fused = not self.use_graph and fused_sampler_available(self.model, self.device, self.dtype, self.backend)
        if fused:
            # exactly root-relative when center_root, as the training targets are (the model puts the root
            # only near 0): the mean moves with the hypotheses, the spread about it is recomputed
            hyp, mean, spread = fused_sample(self.model, self.diffusion, y, center=self.center_root, **args)
        else:
            hyp, mean, spread = self.diffusion.sample(self.model, y, backend=self.backend, **args)
            if self.center_root:
                hyp, mean, spread = center_on_root(hyp, mean, self.root)
        scale = self.diffusion.cfg.pose_scale
        if self.aggregate == "median":
            mean = hyp.median(dim=1).values
        return hyp * scale, mean * scale, spread * scale

    def _graph_key(self, frames: int) -> tuple:
        """Everything `_run` bakes into a captured graph as a constant. Settings may be changed on
        the object between calls: each combination gets its graph."""
        return (frames, self.n_hyp, self.steps, self.sampler, self.eta, self.flip, self.aggregate, self.dtype,
                self.backend, self.center_root, self.fused_sampler, id(self.diffusion),
                tuple(sorted(self.diffusion.cfg.to_dict().items())))

    def _loop_for(self, frames: int) -> _CapturedLoop:
        model_key = state_key(self.model)  # a graph reads parameters and caches by address
        if model_key != self._graphs_model_key:  # parameters changed: every graph reads stale or freed memory
            self._graphs.clear()
            self._graphs_model_key = model_key
        key = self._graph_key(frames)
        if key in self._graphs:
            self._graphs.move_to_end(key)
        else:
            while len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)  # its graph and memory pool go with it
            run = lambda y: self._run(y, frames)  # noqa: E731
            self._graphs[key] = _CapturedLoop(run, frames, self.skeleton.num_joints, self.rng_state, self.model)
        return self._graphs[key]

    @torch.no_grad()
    def __call__(self, y: Tensor) -> LiftResult:
        """y: [F, J, 2] screen-normalised 2D poses (any device); results on the lifter's device."""
        check_pose2d(y, self.skeleton.num_joints)
        y = y.to(self.device, torch.float32)
        F = y.shape[0]
        chunks = range(0, F, self.batch_frames)
        if self.progress and len(chunks) > 1:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=f"lifting {F} frames x {self.n_hyp} hypotheses", unit="batch")
        outs = []
        # one bucket for the call (full batches; a ragged last one is padded into it), the same
        # eager or captured, so both draw the same noise counters
        chunk_frames = frame_bucket(min(self.batch_frames, F), self.batch_frames)
        for s in chunks:
            yc = y[s:s + self.batch_frames]
            if self.use_graph:
                outs.append(self._loop_for(chunk_frames)(yc))
            else:
                outs.append(self._run(yc, chunk_frames))
        hyp, mean, spread = (torch.cat(parts) for parts in zip(*outs))
        return LiftResult(mean=mean, hypotheses=hyp, spread=spread)
