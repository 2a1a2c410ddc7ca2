"""The whole sampler as one op: every denoiser layer of every step, the sampler updates with
their noise, the flip average, the root centring and the aggregation in one call.

For 2D poses y [B, J, 2] and a GCNDenoiser, `sample` returns what `Diffusion.sample` (then,
with center_root, Lifter's root centring) returns for the same rng_state and counter stride:
hypotheses [B, N, J, 3], their mean [B, J, 3] and per-joint spread [B, J], float32, normalised
units. The noise is sampler_step's counter-based Philox (x_T at counters offset + e, step i at
offset + (i + 1) * stride + e for element e), so both paths draw the same numbers, and
rng_state is advanced past them in the same way.

Implementations: `sample_ref` (the model and Diffusion.sample on the reference backend: the
definition), `diffupose::sample` (C++: CPU, csrc/sample_cpu.cpp, and CUDA, csrc/cuda/sample_cuda.cu)
and `diffupose::sample_triton` (kernels/sample.py). The CPU op computes in float32 whatever the
activation dtype; on a GPU (CUDA and Triton) a float16 / bfloat16 activation dtype puts the hidden
layers' GEMMs on fp16 tensor cores with fp32 accumulation (y is handed over in that dtype, which
selects it), float32 keeps every product in fp32. The backend switch picks the implementation for
CUDA tensors as for the other ops (auto: cuda > triton); CPU tensors take the C++ op, or the Triton
kernel under TRITON_INTERPRET=1 when backend 'triton' is asked for (how its tests run). The weights are packed once per model ([w0 | w1] side by side,
the out layer cut to its 3 eps channels, the affinities normalised) and re-packed when a
parameter changes (version counters and storage, as GCNDenoiser.time_conditioning keys its
cache). No gradient: it is inference only.
"""
from __future__ import annotations

import weakref
from typing import Optional, Union

import torch
from torch import Tensor, nn

from . import backend as _backend
from .mgcn import ACTIVATIONS
from .registry import cpp_op, register_once

EPS_CHANNELS = 3  # the out layer's eps channels; its 2 y_hat channels are unused while sampling


def center_on_root(hyp: Tensor, mean: Tensor, root: int) -> tuple[Tensor, Tensor, Tensor]:
    """Hypotheses [B, N, J, 3] translated so that joint `root` is exactly 0 (the training targets are
    root-relative; the model puts the root only near 0): the mean moves with them and the spread is
    recomputed about the moved mean."""
    hyp = hyp - hyp[:, :, root:root + 1]
    mean = mean - mean[:, root:root + 1]
    spread = (hyp - mean[:, None]).square().sum(-1).mean(1).sqrt()
    return hyp, mean, spread


@torch.no_grad()
def sample_ref(model: nn.Module, diffusion, y: Tensor, n_hyp: int = 1, steps: Optional[int] = 5, eta: float = 0.0,
               ddpm: bool = False, rng_state: Optional[Tensor] = None, seed: int = 0, flip=None,
               dtype: torch.dtype = torch.float32, counter_stride: Optional[int] = None,
               center: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The definition: Diffusion.sample with the model on the reference backend, then (center) the
    root centring. Advances rng_state as Diffusion.sample does."""
    hyp, mean, spread = diffusion.sample(model, y, n_hyp=n_hyp, steps=steps, eta=eta, ddpm=ddpm,
                                         rng_state=rng_state, seed=seed, flip=flip, backend="reference", dtype=dtype,
                                         counter_stride=counter_stride)
    if center:
        hyp, mean, spread = center_on_root(hyp, mean, model.skeleton.parents.index(-1))
    return hyp, mean, spread


# ---------------------------------------------------------------------------------------------
# packing, once per model
# ---------------------------------------------------------------------------------------------
def _convs(model: nn.Module) -> list:
    """The graph convolutions in the op's order: input, (conv1, conv2) of each block, out."""
    return model.net.layers()


def state_key(*modules: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer of the modules is updated in place (its version
    counter), replaced (its address) or moved (its address and device): what is derived from them
    (packed weights, a batch norm's statistics folded in; a captured CUDA graph, which reads them by
    address) is stale. Walks the modules' own dicts rather than Module.parameters(), whose
    generators cost ~200 us per call on a small model: this runs on every lift."""
    key = []
    stack = list(modules)
    while stack:
        m = stack.pop()
        for t in (*m._parameters.values(), *m._buffers.values()):
            if t is not None:
                key.append((t._version, t.data_ptr()))
        stack.extend(c for c in m._modules.values() if c is not None)
    device = next((t.device for m in modules for t in m.parameters()), None)
    return tuple(key), device


_packed: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, list[Tensor]]]" = weakref.WeakKeyDictionary()
_films: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def pack_weights(model: nn.Module, key: Optional[tuple] = None) -> list[Tensor]:
    """4 float32 tensors per graph convolution (w [C_in, 2 C_out] = [w0 | w1], m, a, bias), from
    GCNBackbone.inference_layers (a batch norm folded into w and bias), the out layer cut to the eps
    channels; cached until a parameter or buffer of the convolutions changes. key: the caller's
    state_key of the convolutions or of a module holding them (one walk serves a whole call)."""
    convs = _convs(model)
    key = state_key(*convs) if key is None else key
    hit = _packed.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    layers = model.net.inference_layers()
    packed = []
    for i, L in enumerate(layers):
        c = EPS_CHANNELS if i == len(layers) - 1 else L["W"].shape[-1]
        w = L["W"][:, :, :c].float()
        packed += [torch.cat([w[0], w[1]], 1).contiguous(), L["M"][:, :c].float().contiguous(),
                   L["a"].float().contiguous(), L["bias"][:c].float().contiguous()]
    _packed[model] = (key, packed)
    return packed


@torch.no_grad()
def film_table(model: nn.Module, timesteps: list[int], device, key: Optional[tuple] = None) -> Tensor:
    """The blocks' scale-shifts of every step [steps, blocks, 2, d] float32, from the model's own
    time_conditioning; cached per timestep list until the embedding or FiLM weights change (key: as
    for pack_weights, a state_key covering them)."""
    key = (tuple(timesteps), state_key(model.temb, model.net.films) if key is None else key, device)
    cache = _films.setdefault(model, {})
    hit = cache.get(key[0])
    if hit is not None and hit[0] == key:
        return hit[1]
    if model.cfg.n_blocks == 0:  # nothing to condition (torch.cat of no tensors would fail)
        table = torch.zeros(len(timesteps), 0, 2, model.cfg.d_model, device=device)
    else:
        table = torch.stack([torch.cat(model.time_conditioning(t, 1, device), 0) for t in timesteps]).float()
    cache[key[0]] = (key, table)
    return table


# ---------------------------------------------------------------------------------------------
# the op
# ---------------------------------------------------------------------------------------------
def _fake(y, weights, film, coefs, rng_state, n_hyp, counter_stride, flip_perm, act, root, center_root):
    B, J, _ = y.shape
    return (y.new_empty(B, n_hyp, J, 3, dtype=torch.float32), y.new_empty(B, J, 3, dtype=torch.float32),
            y.new_empty(B, J, dtype=torch.float32))


def _cpp_op():
    op = cpp_op("sample")
    register_once("sample_cpp", lambda: torch.library.register_fake("diffupose::sample")(_fake))
    return op


def _define_triton_op() -> None:
    from diffupose.kernels import sample as K  # imports triton

    @torch.library.custom_op("diffupose::sample_triton", mutates_args=())
    def sample_triton(y: Tensor, weights: list[Tensor], film: Tensor, coefs: list[float], rng_state: Tensor,
                      n_hyp: int, counter_stride: int, flip_perm: list[int], act: int, root: int,
                      center_root: bool) -> tuple[Tensor, Tensor, Tensor]:
        return K.sample_triton(y, weights, film, coefs, rng_state, n_hyp, counter_stride, flip_perm, act, root,
                               center_root)

    torch.library.register_fake("diffupose::sample_triton")(_fake)


def _triton_op():
    register_once("sample_triton", _define_triton_op)
    return torch.ops.diffupose.sample_triton


def _op_for(device: torch.device, backend: Optional[str]) -> tuple[str, object]:
    """(kind, op) for tensors on `device` under the backend switch: the Triton op where 'triton'
    resolves (CUDA, or the CPU under TRITON_INTERPRET=1), else the C++ op (its CPU or CUDA kernel by
    the tensors' device; on the CPU also for 'reference', as before the GPU versions existed). There
    is no reference *op*: the definition is sample_ref."""
    name = _backend.resolve(backend, device)
    if name == "triton":
        return "triton", _triton_op()
    if device.type == "cuda" and name != "cuda":
        raise _backend.BackendUnavailable(
            f"sample: the fused sampler on {device} needs the cuda or triton backend (resolved {name!r}); "
            "use sample_ref or the per-layer path (Lifter(fused_sampler=False))")
    return "cpp", _cpp_op()


def fused_sampler_available(model: nn.Module, device, dtype: torch.dtype = torch.float32,
                            backend: Optional[str] = None) -> bool:
    """Whether `sample` runs this model by default (Lifter(fused_sampler=None)): a GCNDenoiser on
    the CPU with the extension built, an activation dtype the op covers (it computes in float32: not
    float64) and the CPU backend. The GPU versions (CUDA, Triton) are not a default until a GPU has
    run their tests (docs/DESIGN.md, "How the GPU runs the whole sampler"); Lifter(fused_sampler=True)
    or `sample` itself runs them on CUDA tensors."""
    from ..model import GCNDenoiser

    device = torch.device(device)
    if not isinstance(model, GCNDenoiser) or device.type != "cpu" or dtype == torch.float64:
        return False
    if any(c.norm is not None and not hasattr(c.norm, "running_var") for c in model.net.layers()):
        return False  # a layer norm cannot be folded into the packed weights
    try:
        return _backend.resolve(backend, device) == "cpu" and _cpp_op() is not None
    except _backend.BackendUnavailable:  # not built, or built before this op existed
        return False


@torch.no_grad()
def sample(model: nn.Module, diffusion, y: Tensor, n_hyp: int = 1, steps: Optional[int] = 5, eta: float = 0.0,
           ddpm: bool = False, rng_state: Optional[Tensor] = None, seed: int = 0, flip=None,
           dtype: torch.dtype = torch.float32, counter_stride: Optional[int] = None,
           center: bool = False, backend: Optional[str] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Diffusion.sample (+ root centring) in one call of diffupose::sample (or sample_triton); the
    same arguments and results as `sample_ref` (float32 results; on the CPU dtype is accepted for the
    same signature and the op computes in float32, on a GPU a half dtype selects fp16 tensor-core
    GEMMs). flip: a Skeleton, its name, or None; backend: the switch's choice (default: the current one)."""
    from ..model import GCNDenoiser
    from ..skeleton import get_skeleton

    if not isinstance(model, GCNDenoiser):
        raise ValueError(f"sample: the fused sampler runs a GCNDenoiser, got {type(model).__name__}")
    if not isinstance(y, Tensor) or y.dim() != 3 or y.shape[-1] != 2:
        raise ValueError(f"sample: y must be a tensor [frames, joints, 2], got {getattr(y, 'shape', type(y))}")
    J = model.skeleton.num_joints
    if y.shape[1] != J:
        raise ValueError(f"sample: y has {y.shape[1]} joints, the model {J}")
    if n_hyp < 1:
        raise ValueError(f"sample: n_hyp must be >= 1, got {n_hyp}")
    if y.device.type not in ("cpu", "cuda"):
        raise ValueError(f"sample: the fused sampler runs on the CPU or a CUDA GPU, y is on {y.device}")
    if rng_state is None:
        rng_state = torch.tensor([seed, 0], dtype=torch.int64, device=y.device)
    if rng_state.dtype != torch.int64 or rng_state.numel() != 2 or rng_state.device != y.device:
        where = "CPU" if y.device.type == "cpu" else str(y.device)
        raise ValueError(f"sample: rng_state must be an int64 {where} tensor [seed, offset]")
    kind, op = _op_for(y.device, backend)
    skel = get_skeleton(flip) if isinstance(flip, str) else flip
    if skel is not None and skel.num_joints != J:
        raise ValueError(f"sample: flip skeleton {skel.name} has {skel.num_joints} joints, the model {J}")
    plan = diffusion.plan(steps, eta, ddpm)
    numel = y.shape[0] * n_hyp * J * 3
    stride = numel if counter_stride is None else int(counter_stride)
    if stride < numel:
        raise ValueError(f"sample: counter_stride {stride} is smaller than the {numel} elements of a step")
    key = state_key(model)  # one walk over the parameters for both caches
    film = film_table(model, [t for t, _ in plan], y.device, key)
    coefs = [float(v) for _, c in plan for v in c.as_args()]
    perm = list(skel.flip_permutation) if skel is not None else []
    if y.device.type == "cpu" and kind == "cpp":
        y_in = y  # the CPU op computes in float32 from y as given
    else:  # a GPU kernel: y in the activation dtype asks for the tensor-core GEMMs (half), fp32 otherwise
        y_in = y.to(dtype) if dtype in (torch.float16, torch.bfloat16) else y.float()
    hyp, mean, spread = op(y_in, pack_weights(model, key), film, coefs, rng_state, int(n_hyp), stride, perm,
                           ACTIVATIONS[model.cfg.act], model.skeleton.parents.index(-1), bool(center))
    rng_state[1] += (len(plan) + 1) * stride  # as Diffusion.sample: the next call draws fresh noise
    return hyp, mean, spread


if _backend.has_extension():
    try:
        _cpp_op()
    except _backend.BackendUnavailable:  # a stale build: the per-layer path still works
        pass
