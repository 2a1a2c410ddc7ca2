"""The PyTorch baselines the fused paths are measured against (bench/fps.py), and the denoiser's
FLOP count that bounds them all.

- `eager_ddim`: DDIM (eta = 0) over the model on the reference ops, the sampler update as the
  reference step in PyTorch: the natural eager formulation.
- `CompiledDDIM`: the same loop as one pure function of plain tensors, through
  torch.compile(fullgraph=True). The model itself does not compile well as a baseline: its
  inference caches key on the Python-int timestep (`GCNDenoiser.time_conditioning`) and check
  data pointers, so dynamo breaks the graph there and guards on t, recompiling per step until
  its recompile limit, then running eagerly. Here
  the weights, the affinities and the per-step scale-shifts are taken out of the model once
  (they do not depend on the input), stacked per step, and the k-step loop is unrolled over
  Python ints: one graph, no guard on t, no graph break (tests/test_bench_fps.py counts).
- `denoiser_flops`: the GCN denoiser's matmul FLOPs per pose per call; over the machine's
  matmul rate it is the floor no path can beat.

Both samplers run the same loop (`_ddim_loop`) and the same per-layer math (`mgcn_ref`,
`sampler_step_ref`, x0 clipping included), so they differ only in how the denoiser is called.
DDIM with eta = 0 only (no noise after x_T), no flip: the configurations bench/fps.py times.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .diffusion import Diffusion
from .model import GCNDenoiser
from .ops import StepCoefs, mgcn_ref, sampler_step_ref

EpsFn = Callable[[int, Tensor, Tensor], Tensor]  # (step index, x [M, J, 3], y [M, J, 2]) -> eps


def _ddim_loop(eps_fn: EpsFn, coefs: tuple[StepCoefs, ...], y: Tensor, x_T: Tensor, n_hyp: int,
               dtype: torch.dtype, pose_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """k DDIM steps from x_T [B * n_hyp, J, 3]; (hypotheses [B, n_hyp, J, 3], mean, spread) in
    metres. The loop runs over Python ints, so under dynamo it unrolls into one graph."""
    B, J, _ = y.shape
    yy = y.to(dtype).repeat_interleave(n_hyp, 0)  # a frame's hypotheses adjacent, as in Diffusion.sample
    x, mean, spread = x_T, None, None
    for i, c in enumerate(coefs):
        eps = eps_fn(i, x.to(dtype), yy)
        # eta = 0: sigma is 0, so the step draws no noise and needs no generator state
        x, mean, spread = sampler_step_ref(x, eps, None, 0, c, n_hyp, aggregate=i == len(coefs) - 1)
    return x.view(B, n_hyp, J, 3) * pose_scale, mean * pose_scale, spread * pose_scale


def _ddim_plan(diffusion: Diffusion, steps: int) -> tuple[tuple[int, ...], tuple[StepCoefs, ...]]:
    plan = diffusion.plan(steps, eta=0.0)
    return tuple(t for t, _ in plan), tuple(c for _, c in plan)


def _draw_x_T(y: Tensor, n_hyp: int, x_T: Optional[Tensor]) -> Tensor:
    if x_T is None:
        return torch.randn(y.shape[0] * n_hyp, y.shape[1], 3, device=y.device)
    return x_T


def eager_ddim(model: nn.Module, diffusion: Diffusion, n_hyp: int, steps: int, dtype: torch.dtype = torch.float32):
    """run(y [B, J, 2], x_T=None) -> (hypotheses, mean, spread) in metres: the model on the
    reference ops (plain PyTorch), x_T from torch.randn unless given."""
    ts, coefs = _ddim_plan(diffusion, steps)
    scale = diffusion.cfg.pose_scale

    def run(y: Tensor, x_T: Optional[Tensor] = None):
        eps_fn = lambda i, x, yy: model(x, yy, ts[i], backend="reference")[0]  # noqa: E731
        return _ddim_loop(eps_fn, coefs, y, _draw_x_T(y, n_hyp, x_T), n_hyp, dtype, scale)

    return run


# ---------------------------------------------------------------------------------------------
# the model as plain tensors, for torch.compile
# ---------------------------------------------------------------------------------------------
def _plain_eps(layers: tuple, acts: tuple[str, ...], scale_shifts: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """GCNDenoiser.forward's noise prediction from plain tensors: layers[k] = (w, m, a, bias) in
    the order in-conv, (conv1, conv2) per block, out-conv; scale_shifts [n_blocks, 1, 2, d] of
    this step. The same mgcn_ref the reference backend runs."""
    h = mgcn_ref(torch.cat([x, y], -1), *layers[0], act=acts[0])
    n_blocks = (len(layers) - 2) // 2
    for b in range(n_blocks):
        r = h
        h = mgcn_ref(h, *layers[1 + 2 * b], scale_shift=scale_shifts[b], act=acts[1 + 2 * b])
        h = mgcn_ref(h, *layers[2 + 2 * b], residual=r, act=acts[2 + 2 * b])
    return mgcn_ref(h, *layers[-1], act=acts[-1])[..., :3]


class CompiledDDIM:
    """The k-step DDIM loop of a GCNDenoiser through torch.compile(fullgraph=True), on plain tensors.

    At construction the model's inference layers (`GCNBackbone.inference_layers()`: weights with a
    batch norm folded, affinities) and the
    scale-shifts of the k timesteps are copied out (a snapshot: later weight changes are not
    seen). Shapes are static (dynamic=False): one compile per (frames, n_hyp), on the first call.
    Every instance's loop shares one code object, hence dynamo's cache entries: call
    `reset_compiled()` between instances (bench/fps.py does), or each new one counts as a
    recompile of the last, and past dynamo's recompile limit (8) it runs eagerly.
    mode: an inductor mode ("max-autotune" on a GPU adds CUDA graphs; on the CPU
    "max-autotune-no-cudagraphs" or "default"); backend: a dynamo backend ("inductor", or
    "eager" / "aot_eager" / a counting backend to check the capture without code generation).
    """

    def __init__(self, model: GCNDenoiser, diffusion: Diffusion, n_hyp: int, steps: int,
                 dtype: torch.dtype = torch.float32, mode: Optional[str] = "default", backend="inductor"):
        if not isinstance(model, GCNDenoiser):
            raise TypeError(f"CompiledDDIM needs a GCNDenoiser, got {type(model).__name__}")
        ts, coefs = _ddim_plan(diffusion, steps)
        # what the fused op computes at inference (a batch norm folded into W and bias)
        layers = model.net.inference_layers()
        with torch.no_grad():
            device = layers[0]["W"].device
            self.layers = tuple((L["W"], L["M"], L["a"], L["bias"]) for L in layers)
            # [k, n_blocks, 1, 2, d]: indexed by the unrolled loop's Python int, so no guard on t
            self.scale_shifts = torch.stack([torch.stack(model.time_conditioning(t, 1, device)) for t in ts])
        self.acts = acts = tuple(L["act"] for L in layers)
        self.n_hyp = n_hyp
        scale = diffusion.cfg.pose_scale

        def loop(layers, scale_shifts, y, x_T):
            eps_fn = lambda i, x, yy: _plain_eps(layers, acts, scale_shifts[i], x, yy)  # noqa: E731
            return _ddim_loop(eps_fn, coefs, y, x_T, n_hyp, dtype, scale)

        self.loop = loop  # uncompiled, for checking the capture against the eager run
        opts = {"mode": mode} if backend == "inductor" and mode not in (None, "default") else {}
        self.compiled = torch.compile(loop, fullgraph=True, dynamic=False, backend=backend, **opts)

    def __call__(self, y: Tensor, x_T: Optional[Tensor] = None):
        if y.is_cuda:  # max-autotune's CUDA graphs: each call is a new replay (the last outputs may be reused)
            torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(self.layers, self.scale_shifts, y, _draw_x_T(y, self.n_hyp, x_T))


def compile_counts() -> dict:
    """Dynamo's counters since the last `reset_compiled()`: graphs compiled and graph breaks. A
    fullgraph compile called again at the same shapes leaves graphs = 1 and no break; a
    recompile (a guard failing, e.g. on a changing Python-int timestep) adds a graph."""
    from torch._dynamo.utils import counters

    return {"graphs": counters["stats"]["unique_graphs"], "graph_breaks": sum(counters["graph_break"].values())}


def reset_compiled() -> None:
    """Forget every compiled frame and the counters (frees compiled code and its CUDA graphs)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


def denoiser_flops(model: GCNDenoiser) -> int:
    """Floating-point operations of one GCNDenoiser call per pose (J joints), counting a
    multiply-add as 2: per graph convolution the shared mapping x @ [w0 | w1] (2 J C_in 2 C_out)
    and the J x J aggregation of the neighbour half (2 J J C_out); elementwise work (bias,
    modulation, epilogue) is left out, it is not matmul work. ~37 MFLOP at d_m 256, 4 blocks."""
    J = model.net.inp.adj.shape[0]
    return sum(2 * J * c.c_in * 2 * c.c_out + 2 * J * J * c.c_out for c in model.net.layers())


# ---------------------------------------------------------------------------------------------
# benchmark conditions
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def busy_processes(n: int):
    """n competing busy processes (Python `while True` loops) for the duration; killed after."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
    try:
        time.sleep(0.2)  # let them start spinning before the first timed call
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
