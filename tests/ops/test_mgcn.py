"""The fused modulated graph convolution of every backend against the fp64 reference:
forward and every gradient, on fresh random inputs, with poisoned outputs.

Bound: a kernel's relative error against the fp64 reference is at most twice that of PyTorch
doing the same math in the kernel's dtype (with a small floor per dtype). Sizes: the channel
shapes of the real model (5 -> d, d -> d, d -> 5), J in {15, 16, 17}, batches 1, 3 and a large
odd one; under the Triton interpreter (no GPU) the sizes are kept small.
"""
from __future__ import annotations

import os

import pytest
import torch

from diffupose.ops import ACTIVATIONS, mgcn, mgcn_ref
from tests.helpers import assert_same_on_1_and_2_threads, cpu_isa, kernel_device, poisoned, rel_err, skip_unless_backend

BACKENDS = ["cpu", "cuda", "triton"]
FLOOR = {torch.float32: 1e-5, torch.float16: 5e-4, torch.bfloat16: 4e-3, torch.float64: 1e-12}
INTERPRETED = not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") == "1"


def _small(backend):
    return backend == "triton" and INTERPRETED


def make_inputs(B, J, cin, cout, ss_rows, with_res, seed=None):
    """Fresh random fp64 inputs of realistic scale (the affinity is a normalised-looking matrix)."""
    g = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(0, 2**31, ())))
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    a = torch.rand(J, J, generator=g, dtype=torch.float64)
    a = (a + a.T) / J
    inp = dict(x=r(B, J, cin), w=r(2, cin, cout) / cin ** 0.5, m=1 + 0.2 * r(J, cout), a=a, bias=0.1 * r(cout))
    inp["scale_shift"] = None if ss_rows is None else 0.3 * r(B if ss_rows == "B" else 1, 2, cout)
    inp["residual"] = r(B, J, cout) if with_res else None
    return inp, r(B, J, cout)  # inputs, upstream gradient


def run(inp, grad, act, dtype, device, backend, param_dtype=None):
    """out and the gradients of <out, grad> for every tensor input, in the given dtypes."""
    leaves = {}
    for k, v in inp.items():
        if v is None:
            leaves[k] = None
            continue
        dt = param_dtype if (param_dtype is not None and k in ("w", "m", "a", "bias")) else dtype
        leaves[k] = v.to(device=device, dtype=dt, copy=True).requires_grad_(True)
    if backend == "torch":
        out = mgcn_ref(leaves["x"], leaves["w"], leaves["m"], leaves["a"], leaves["bias"], leaves["scale_shift"],
                       leaves["residual"], act)
    else:
        out = mgcn(leaves["x"], leaves["w"], leaves["m"], leaves["a"], leaves["bias"], leaves["scale_shift"],
                   leaves["residual"], act, backend=backend)
    (out.double() * grad.to(device)).sum().backward()
    return out, {k: v.grad for k, v in leaves.items() if v is not None}


def check_backend(backend, B, J, cin, cout, act, ss_rows, with_res, dtype, param_dtype=None):
    skip_unless_backend(backend)
    if backend == "triton" and dtype == torch.bfloat16 and INTERPRETED:
        pytest.skip("triton bf16: tl.dot in bf16 is wrong under the interpreter; tested on a GPU only")
    dev = kernel_device(backend)
    inp, grad = make_inputs(B, J, cin, cout, ss_rows, with_res)
    ref_out, ref_grads = run(inp, grad, act, torch.float64, "cpu", "torch")
    same_out, same_grads = run(inp, grad, act, dtype, "cpu", "torch", param_dtype)
    with poisoned():
        out, grads = run(inp, grad, act, dtype, dev, backend, param_dtype)
    assert out.dtype == dtype and out.shape == (B, J, cout)
    floor = FLOOR[dtype]
    bound = max(2 * rel_err(same_out, ref_out), floor)
    assert rel_err(out, ref_out) <= bound, f"forward: {rel_err(out, ref_out):.3e} > {bound:.3e}"
    for k, gref in ref_grads.items():
        assert grads[k].dtype == same_grads[k].dtype, k
        bound = max(2 * rel_err(same_grads[k], gref), floor)
        e = rel_err(grads[k], gref)
        assert e <= bound, f"d{k}: {e:.3e} > {bound:.3e}"


def _shapes(small):
    ds = (64,) if small else (64, 128, 256, 384)
    return [(ci, co) for d in ds for (ci, co) in ((5, d), (d, d), (d, 5))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("J", [15, 16, 17])
@pytest.mark.parametrize("shape_idx", range(12))
def test_model_shapes_fp32(backend, J, shape_idx):
    shapes = _shapes(_small(backend))
    if shape_idx >= len(shapes):
        pytest.skip("size not run under the Triton interpreter")
    cin, cout = shapes[shape_idx]
    for B in ((1, 3, 37) if _small(backend) else (1, 3, 1027)):
        check_backend(backend, B, J, cin, cout, "silu", "B", cout == cin, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("ss_rows", [None, 1, "B"])
@pytest.mark.parametrize("with_res", [False, True])
def test_epilogues(backend, act, ss_rows, with_res):
    check_backend(backend, 5, 17, 24, 40, act, ss_rows, with_res, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("params", ["same", "fp32"])
@pytest.mark.parametrize("J", [15, 17])
def test_half_precision(backend, dtype, params, J):
    d = 64 if _small(backend) else 256
    param_dtype = torch.float32 if params == "fp32" else None
    for cin, cout in ((5, d), (d, d), (d, 5)):
        check_backend(backend, 7 if _small(backend) else 301, J, cin, cout, "silu", "B", cin == cout, dtype,
                      param_dtype)


def test_gradcheck_cpu_float64():
    skip_unless_backend("cpu")
    inp, _ = make_inputs(2, 15, 3, 4, "B", True, seed=1)
    keys = list(inp)
    tensors = [inp[k].clone().requires_grad_(True) for k in keys]

    for act in ACTIVATIONS:
        def f(*ts):
            return mgcn(*ts[:5], ts[5], ts[6], act, backend="cpu")

        assert torch.autograd.gradcheck(f, tensors, eps=1e-6, atol=1e-7)
    # scale-shift broadcast over the batch (one row)
    inp, _ = make_inputs(3, 16, 4, 3, 1, False, seed=2)
    ts = [inp[k].clone().requires_grad_(True) for k in ("x", "w", "m", "a", "bias", "scale_shift")]
    assert torch.autograd.gradcheck(lambda *t: mgcn(*t, None, "silu", backend="cpu"), ts, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend):
    """Schema, fake kernel and autograd registration agree with the real kernel."""
    skip_unless_backend(backend)
    dev = kernel_device(backend)
    mgcn(torch.zeros(1, 15, 2, device=dev), torch.zeros(2, 2, 2, device=dev), torch.zeros(15, 2, device=dev),
         torch.zeros(15, 15, device=dev), torch.zeros(2, device=dev), backend=backend)  # registers the op
    name = "mgcn_fwd_triton" if backend == "triton" else "mgcn_fwd"
    op = getattr(torch.ops.diffupose, name)
    inp, _ = make_inputs(3, 16, 8, 6, "B", True, seed=3)
    args = [inp[k].float().to(dev).requires_grad_(k != "residual") for k in ("x", "w", "m", "a", "bias", "scale_shift")]
    torch.library.opcheck(op, (*args, inp["residual"].float().to(dev), ACTIVATIONS["silu"], True))


def test_backward_without_saved_pre_is_an_error():
    skip_unless_backend("cpu")
    inp, _ = make_inputs(2, 17, 4, 4, None, False, seed=4)
    f = {k: v.float() for k, v in inp.items() if v is not None}
    out, pre, h = torch.ops.diffupose.mgcn_fwd(f["x"].requires_grad_(), f["w"], f["m"], f["a"], f["bias"], None, None,
                                               0, False)
    assert pre.numel() == 0 and h.numel() == 0
    with pytest.raises(RuntimeError, match="save_pre"):
        out.sum().backward()


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kept_h_is_the_gemm_and_serves_the_backward(backend, dtype):
    """Training keeps h = x @ [w0 | w1] (opmath) for the backward; it must be that GEMM's output
    (poisoned first), and a backward from it must equal one that computes h again (empty h)."""
    skip_unless_backend(backend)
    dev = kernel_device(backend)
    inp, grad = make_inputs(5, 17, 12, 20, "B", True, seed=7)
    f = {k: v.to(dev, dtype if k in ("x", "scale_shift", "residual") else torch.float32) for k, v in inp.items()}
    args = (f["x"], f["w"], f["m"], f["a"], f["bias"], f["scale_shift"], f["residual"], ACTIVATIONS["silu"])
    with poisoned():
        out, pre, h = torch.ops.diffupose.mgcn_fwd(*args, True)
    assert h.dtype == torch.float32 and h.shape == (5 * 17, 40)
    want = f["x"].float().reshape(-1, 12) @ torch.cat([f["w"][0], f["w"][1]], 1)
    assert rel_err(h, want) <= 1e-6
    g = grad.to(dev, dtype)
    kept = torch.ops.diffupose.mgcn_bwd(g, f["x"], f["w"], f["m"], f["a"], pre, h, f["scale_shift"], 2)
    again = torch.ops.diffupose.mgcn_bwd(g, f["x"], f["w"], f["m"], f["a"], pre, h.new_empty(0), f["scale_shift"], 2)
    for u, v in zip(kept, again):
        assert torch.equal(u, v)
    with pytest.raises(RuntimeError, match="h must be empty or"):
        torch.ops.diffupose.mgcn_bwd(g, f["x"], f["w"], f["m"], f["a"], pre, h[:-1], f["scale_shift"], 2)


def _train_step(inp, grad):
    out, grads = run(inp, grad, "silu", torch.float32, "cpu", "cpu")
    return [out, *grads.values()]


def test_training_groups_do_not_depend_on_the_thread_count():
    """Training runs its GEMMs per fixed group of samples (one partial dw each, summed in order):
    bit for bit the same on 1 and on 2 threads, with many groups and a ragged last one."""
    skip_unless_backend("cpu")
    inp, grad = make_inputs(203, 17, 48, 40, "B", True, seed=11)

    def step():
        with poisoned():
            return _train_step(inp, grad)

    assert_same_on_1_and_2_threads(step)


@pytest.mark.parametrize("J", [15, 17])
def test_training_one_gemm_path(J):
    """The other training path (one threaded BLAS call per GEMM, set_mgcn_group_gemm(False), the
    benchmark's A/B) against the fp64 reference too."""
    skip_unless_backend("cpu")
    from diffupose import _C

    was = _C.set_mgcn_group_gemm(False)
    try:
        for B in (3, 203):
            check_backend("cpu", B, J, 64, 48, "silu", "B", False, torch.float32)
    finally:
        _C.set_mgcn_group_gemm(was)
    assert was is True  # the default


@pytest.mark.parametrize("J,cin,cout,B", [(17, 5, 64, 9), (16, 64, 64, 7), (15, 64, 5, 11)])
def test_triton_gpu_tiling_under_interpreter(monkeypatch, J, cin, cout, B):
    """The GPU tile shapes (many programs, loops over C_in, dw split over rows) run here too, so CI
    checks the code path a GPU takes, not only the interpreter's one-big-tile path."""
    skip_unless_backend("triton")
    if not INTERPRETED:
        pytest.skip("on a GPU the GPU tiling is what every other test runs")
    import diffupose.kernels.mgcn as K

    monkeypatch.setattr(K, "_big_tiles", lambda: False)
    monkeypatch.setattr(K, "_sm_count", lambda device: 132)
    check_backend("triton", B, J, cin, cout, "silu", "B", cin == cout, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    """No samples: empty outputs and zero parameter gradients, no launch on an empty grid."""
    skip_unless_backend(backend)
    dev = kernel_device(backend)
    inp, grad = make_inputs(0, 17, 8, 6, "B", True, seed=5)
    out, grads = run(inp, grad, "silu", torch.float32, dev, backend)
    assert out.shape == (0, 17, 6)
    for k in ("w", "m", "a", "bias"):
        assert torch.equal(grads[k], torch.zeros_like(grads[k])), k


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_cpu_instruction_sets(isa, act):
    """Each compiled instruction-set version of the CPU kernel's row loops, where this CPU runs it:
    C_out 40 (less than one register block of the aggregation on AVX-512) and 136 (whole blocks
    and a tail on every set, in both precisions), with and without a scale-shift (none + none is
    the training layer before a batch norm, whose backward does not read pre)."""
    with cpu_isa(isa):
        for dtype in (torch.float32, torch.float64):
            check_backend("cpu", 6, 17, 33, 40, act, 1, True, dtype)
            check_backend("cpu", 5, 16, 24, 136, act, None, False, dtype)


# ---------------------------------------------------------------------------------------------
# GPU-only contract points (skipped without a GPU, with the reason)
# ---------------------------------------------------------------------------------------------
def test_cuda_float64():
    """fp64 x: the CUDA op accumulates in fp64 (its cuBLAS GEMMs in COMPUTE_64F)."""
    for cin, cout in ((5, 64), (64, 64), (64, 5)):
        check_backend("cuda", 37, 17, cin, cout, "silu", "B", cin == cout, torch.float64)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_fp32_ignores_the_global_tf32_switch(backend):
    """The fp32 contract holds with TF32 allowed globally: TF32 GEMMs would be ~1e-3 off."""
    skip_unless_backend(backend)
    if not torch.cuda.is_available():
        pytest.skip("TF32 exists on GPUs only")
    # the CUDA switch only (set_float32_matmul_precision would also loosen the CPU references)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        check_backend(backend, 301, 17, 256, 256, "silu", "B", True, torch.float32)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_second_gpu(backend):
    """Tensors on cuda:1 while cuda:0 is current: the launchers must work on cuda:1's stream."""
    skip_unless_backend(backend)
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    inp, _ = make_inputs(9, 17, 64, 64, "B", True, seed=3)
    outs = []
    for dev in ("cuda:0", "cuda:1"):
        t = {k: (v.float().to(dev) if v is not None else None) for k, v in inp.items()}
        with torch.no_grad(), torch.cuda.device(0):
            outs.append(mgcn(t["x"], t["w"], t["m"], t["a"], t["bias"], t["scale_shift"], t["residual"], "silu",
                             backend=backend).cpu())
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
