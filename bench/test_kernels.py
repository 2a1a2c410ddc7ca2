"""Microbenchmarks of the fused ops against their PyTorch references (pytest-benchmark).

    pytest bench/test_kernels.py --benchmark-enable --benchmark-group-by=param:case
    pytest bench/test_kernels.py --benchmark-enable -k "infer and b10"   # the 1 frame x 10 hypotheses case

Every backend that runs on this machine is measured side by side in the same process, grouped
by case, so the table reads as ratios against `reference` (plain PyTorch, the natural efficient
formulation: two GEMMs, a batched J x J matmul, elementwise epilogue). Cases: the three channel
shapes of the real model (5 -> d, d -> d, d -> 5) at d = 256, J = 17, inference (no grad) at
B = 10 (one frame x 10 hypotheses) and B = 10240 (1024 frames x 10), and training
(forward + backward) at B = 1024; the sampler step at 10 and 10240 x 17 x 3.
On CUDA the timings synchronise; the same command runs on a GPU machine.
"""
from __future__ import annotations

import os

import pytest
import torch

from diffupose import ops
from diffupose.ops import StepCoefs, mgcn, sampler_step
from diffupose.ops.backend import BackendUnavailable, resolve

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
D = int(os.environ.get("DIFFUPOSE_BENCH_D", "256"))
J = 17


def _backends():
    names = ["reference", "cpu"] if DEVICE.type == "cpu" else ["reference", "cuda", "triton"]
    out = []
    for n in names:
        try:
            resolve(n, DEVICE)
        except BackendUnavailable:
            continue
        if n == "triton" and ops.backend.triton_interpreting():
            continue  # the interpreter is a correctness tool, not a backend to time
        out.append(n)
    return out


BACKENDS = _backends()
SHAPES = {"in": (5, D), "hidden": (D, D), "out": (D, 5)}


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _mgcn_inputs(B, cin, cout, grad):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(DEVICE)  # noqa: E731
    a = torch.rand(J, J, generator=g).to(DEVICE) / J
    t = dict(x=r(B, J, cin), w=r(2, cin, cout) / cin ** 0.5, m=1 + 0.1 * r(J, cout), a=a, bias=r(cout),
             scale_shift=0.1 * r(B, 2, cout), residual=r(B, J, cout) if cin == cout else None)
    if grad:
        for v in t.values():
            if v is not None:
                v.requires_grad_(True)
    return t


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("B", [10, 10240], ids=["b10", "b10240"])
def test_mgcn_infer(benchmark, backend, shape, B):
    cin, cout = SHAPES[shape]
    t = _mgcn_inputs(B, cin, cout, grad=False)
    benchmark.extra_info["case"] = f"mgcn infer {shape} B={B}"

    def run():
        with torch.no_grad():
            mgcn(**t, act="silu", backend=backend)
        _sync()

    benchmark(run)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_mgcn_train(benchmark, backend, shape):
    cin, cout = SHAPES[shape]
    t = _mgcn_inputs(1024, cin, cout, grad=True)
    grad = torch.randn(1024, J, cout, device=DEVICE)
    benchmark.extra_info["case"] = f"mgcn fwd+bwd {shape} B=1024"

    def run():
        out = mgcn(**t, act="silu", backend=backend)
        torch.autograd.grad(out, [v for v in t.values() if v is not None], grad)
        _sync()

    benchmark(run)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("M", [10, 10240], ids=["m10", "m10240"])
def test_sampler_step(benchmark, backend, M):
    x = torch.randn(M, J, 3, device=DEVICE)
    eps = torch.randn(M, J, 3, device=DEVICE)
    rng = torch.tensor([1234, 0], dtype=torch.int64, device=DEVICE)
    coefs = StepCoefs(0.8, 0.6, 0.9, 0.3, 0.1, 4.0)
    benchmark.extra_info["case"] = f"sampler_step M={M} (aggregate over 10)"

    def run():
        sampler_step(x, eps, rng, 0, coefs, n_hyp=10, aggregate=True, backend=backend)
        _sync()

    benchmark(run)


@pytest.mark.parametrize("backend", BACKENDS)
def test_norm_act_train(benchmark, backend):
    """The training batch norm + FiLM + silu + residual of one hidden layer (the denoiser's
    training shape, d 128, batch 256): `reference` is the PyTorch chain the layer runs without the
    op (F.batch_norm, then the epilogue), `cpu` diffupose::norm_act."""
    from diffupose.layers import ChannelBatchNorm
    from diffupose.ops.mgcn import epilogue_ref

    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(DEVICE).requires_grad_()  # noqa: E731
    C = 128
    pre, ss, res = r(256, J, C), r(256, 2, C), r(256, J, C)
    bn = ChannelBatchNorm(C).to(DEVICE)
    grad = torch.randn(256, J, C, device=DEVICE)
    benchmark.extra_info["case"] = "norm_act fwd+bwd B=256 C=128"

    def run():
        out = (epilogue_ref(bn(pre), ss, res, "silu") if backend == "reference" else
               bn.forward_fused(pre, ss, res, "silu", backend))
        torch.autograd.grad(out, [pre, ss, res, bn.weight, bn.bias], grad)
        _sync()

    benchmark(run)
