"""The fused sampler step of every backend against the reference formulas and noise."""
import math

import pytest
import torch

from diffupose.ops import NOISE_COEFS, StepCoefs, philox_normal_ref, sampler_step, sampler_step_ref
from tests.helpers import kernel_device, poisoned, skip_unless_backend

BACKENDS = ["reference", "cpu", "cuda", "triton"]


def _coefs(sigma=0.3, clip=0.0):
    a_t, a_prev = 0.4, 0.7
    return StepCoefs(math.sqrt(a_t), math.sqrt(1 - a_t), math.sqrt(a_prev), math.sqrt(1 - a_prev - sigma ** 2), sigma,
                     clip)


def _device(backend):
    if backend == "reference":
        return torch.device("cpu")
    skip_unless_backend(backend)
    return kernel_device(backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("J,n_hyp,frames", [(17, 1, 3), (16, 5, 2), (15, 10, 1)])
@pytest.mark.parametrize("sigma,clip", [(0.0, 0.0), (0.3, 0.0), (0.3, 1.5)])
@pytest.mark.parametrize("aggregate", [False, True])
def test_matches_reference(backend, dtype, J, n_hyp, frames, sigma, clip, aggregate):
    dev = _device(backend)
    M = frames * n_hyp
    x = (torch.randn(M, J, 3) * 2).to(dtype)
    eps = torch.randn(M, J, 3).to(dtype)
    state = torch.tensor([int(torch.randint(0, 2**62, ())), int(torch.randint(0, 2**40, ()))])
    c = _coefs(sigma, clip)
    with poisoned():
        out, mean, spread = sampler_step(x.to(dev), eps.to(dev), state.to(dev), 77, c, n_hyp, aggregate,
                                         backend=backend)
    ref, rmean, rspread = sampler_step_ref(x, eps, state, 77, c, n_hyp, aggregate)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert out.dtype == dtype
    torch.testing.assert_close(out.cpu().float(), ref.float(), rtol=tol, atol=tol)
    if aggregate:
        assert mean.shape == (frames, J, 3) and spread.shape == (frames, J)
        torch.testing.assert_close(mean.cpu().float(), rmean.float(), rtol=tol, atol=tol)
        torch.testing.assert_close(spread.cpu().float(), rspread.float(), rtol=tol, atol=tol)
        # the reference's aggregation is the plain mean / RMS distance over the hypotheses
        hyp = ref.float().view(frames, n_hyp, J, 3)
        torch.testing.assert_close(rmean.float(), hyp.mean(1), rtol=tol, atol=tol)
    else:
        assert mean is None and spread is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_noise_statistics_and_freshness(backend):
    dev = _device(backend)
    n = 30000 if backend != "triton" or dev.type == "cuda" else 6000
    zeros = torch.zeros(n // 3, 1, 3, device=dev)
    state = torch.tensor([1234, 0], device=dev)
    z1 = sampler_step(zeros, zeros, state, 0, NOISE_COEFS, backend=backend)[0].flatten().cpu().double()
    assert abs(z1.mean()) < 5 / math.sqrt(n) and abs(z1.std() - 1) < 0.03
    # a few quantiles of N(0, 1)
    for q, v in ((0.1587, -1.0), (0.5, 0.0), (0.8413, 1.0)):
        assert abs(torch.quantile(z1, q).item() - v) < 0.05
    # the same state draws the same noise; a moved offset or another seed draws other noise
    z_same = sampler_step(zeros, zeros, state, 0, NOISE_COEFS, backend=backend)[0].flatten().cpu().double()
    assert torch.equal(z1, z_same)
    state[1] += n
    z2 = sampler_step(zeros, zeros, state, 0, NOISE_COEFS, backend=backend)[0].flatten().cpu().double()
    assert abs(torch.corrcoef(torch.stack([z1, z2]))[0, 1]) < 0.05


def test_noise_matches_philox_reference():
    state = torch.tensor([2**40 + 3, 2**33 + 1])
    zeros = torch.zeros(50, 17, 3)
    z = sampler_step_ref(zeros, zeros, state, 5, NOISE_COEFS)[0].flatten()
    torch.testing.assert_close(z, philox_normal_ref(2**40 + 3, 2**33 + 6 + torch.arange(z.numel())))


def test_deterministic_step_is_ddim_formula():
    x, eps = torch.randn(4, 17, 3, dtype=torch.float64), torch.randn(4, 17, 3, dtype=torch.float64)
    c = _coefs(sigma=0.0)
    out = sampler_step_ref(x.float(), eps.float(), torch.tensor([0, 0]), 0, c)[0]
    x0 = (x - c.sqrt_1m_abar * eps) / c.sqrt_abar
    torch.testing.assert_close(out.double(), c.c_x0 * x0 + c.c_eps * eps, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad,match", [
    (dict(x=torch.zeros(4, 17)), "must both be"),
    (dict(eps=torch.zeros(4, 17, 2)), "must both be"),
    (dict(rng_state=torch.tensor([1.0, 2.0])), "int64"),
    (dict(n_hyp=3, aggregate=True), "whole number"),
])
def test_bad_arguments(bad, match):
    args = dict(x=torch.zeros(4, 17, 3), eps=torch.zeros(4, 17, 3), rng_state=torch.tensor([0, 0]), counter_offset=0,
                coefs=_coefs())
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        sampler_step(**args, backend="reference")


@pytest.mark.parametrize("backend", BACKENDS)
def test_aggregate_many_hypotheses(backend):
    """n_hyp beyond one chunk of a kernel (the Triton kernel merges chunk statistics)."""
    dev = _device(backend)
    x, eps = torch.randn(2 * 70, 17, 3), torch.randn(2 * 70, 17, 3)
    state = torch.tensor([9, 4])
    with poisoned():
        out, mean, spread = sampler_step(x.to(dev), eps.to(dev), state.to(dev), 0, _coefs(0.2), 70, True,
                                         backend=backend)
    ref, rmean, rspread = sampler_step_ref(x, eps, state, 0, _coefs(0.2), 70, True)
    torch.testing.assert_close(mean.cpu(), rmean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(spread.cpu(), rspread, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("aggregate", [False, True])
def test_fp32_state_with_strided_half_eps(backend, aggregate):
    """What the engine sends at bf16: the fp32 sampler state and bf16 eps, a view [..., :3] of the
    model's [M, J, 5] output (read through its strides)."""
    dev = _device(backend)
    n_hyp, frames = 4, 3
    x = torch.randn(frames * n_hyp, 17, 3) * 2
    out5 = torch.randn(frames * n_hyp, 17, 5).to(torch.bfloat16)
    eps = out5[..., :3]
    state = torch.tensor([77, 2**34])
    c = _coefs(0.3, 1.5)
    with poisoned():
        out, mean, spread = sampler_step(x.to(dev), out5.to(dev)[..., :3], state.to(dev), 5, c, n_hyp, aggregate,
                                         backend=backend)
    ref, rmean, rspread = sampler_step_ref(x, eps.contiguous(), state, 5, c, n_hyp, aggregate)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-5, atol=1e-5)
    if aggregate:
        torch.testing.assert_close(mean.cpu(), rmean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(spread.cpu(), rspread, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["cpu", "cuda", "triton"])
def test_noise_precision_bound(backend):
    """Every backend's noise is the reference's to within 1e-6 (relative and absolute), for a
    million counters: a fast-math log or cos (CUDA --use_fast_math, Triton's approximate tl.sqrt)
    is ~5e-7 off in absolute terms, which Box-Muller's sqrt(-2 log u) turns into errors of ~1e-4
    where u is near 1. Interpreted Triton (numpy float32) is held to the same bound here."""
    dev = _device(backend)
    n = 1 << 20 if dev.type == "cuda" else 1 << 14
    zeros = torch.zeros(n // 4, 4, 1, device=dev)
    state = torch.tensor([2**40 + 17, 2**33 + 5], device=dev)
    z = sampler_step(zeros, zeros, state, 3, NOISE_COEFS, backend=backend)[0].flatten().cpu()
    ref = philox_normal_ref(2**40 + 17, 2**33 + 8 + torch.arange(n))
    torch.testing.assert_close(z, ref, rtol=1e-6, atol=1e-6)


def test_cuda_build_keeps_precise_math():
    """The noise's bound needs precise logf / cosf / division in the CUDA kernels: setup.py must
    not pass --use_fast_math (or its parts) to nvcc. (The GPU itself checks the bound above.)"""
    import re
    from pathlib import Path

    setup = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    nvcc_flags = re.search(r'extra\["nvcc"\]\s*=\s*\[(.*?)\]', setup, re.S)
    assert nvcc_flags, "setup.py: the nvcc flags list was not found"
    for flag in ("use_fast_math", "ftz=true", "prec-div=false", "prec-sqrt=false"):
        assert flag not in nvcc_flags.group(1), flag
