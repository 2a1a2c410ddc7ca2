"""The GPU versions of the whole sampler (diffupose::sample's contract) against its definition,
`sample_ref` (the model and Diffusion.sample on the reference backend, then the root centring):

- Triton (kernels/sample.py): on a GPU where there is one, else under TRITON_INTERPRET=1 on the
  CPU (tiny models: d 16-32, 1-2 blocks, DDIM 2 steps; the interpreter pays per program and op);
- CUDA (csrc/cuda/sample_cuda.cu): only where a GPU and the CUDA build are present (skipped with
  the reason otherwise), also against the CPU op for the same seed.
Half dtypes are held to the half rule (error vs fp64 at most 2x PyTorch's own in that dtype)."""
from unittest import mock

import pytest
import torch

from diffupose import ops
from diffupose.diffusion import Diffusion, DiffusionConfig
from diffupose.ops.sample import film_table, pack_weights
from tests.helpers import HALF_DTYPES, assert_matches, kernel_device, poisoned, skip_unless_backend
from tests.ops.test_sample import _model

TOL = dict(rtol=1e-4, atol=1e-4)


def _state(device, seed=1234, offset=99) -> torch.Tensor:
    return torch.tensor([seed, offset], dtype=torch.int64, device=device)


def _run(backend, model, diffusion, y, **kw):
    """ops.sample on `backend` and sample_ref from the same state: (out, ref, state after each)."""
    dev = y.device
    s_ref, s_op = _state(dev), _state(dev)
    ref = ops.sample_ref(model, diffusion, y, rng_state=s_ref, **kw)
    with poisoned():  # an element the kernel does not write is NaN and fails the comparison
        out = ops.sample(model, diffusion, y, rng_state=s_op, backend=backend, **kw)
    return out, ref, s_op, s_ref


def _check_close(out, ref, frames, n_hyp, J, tol=TOL):
    assert [tuple(o.shape) for o in out] == [(frames, n_hyp, J, 3), (frames, J, 3), (frames, J)]
    for o, r, name in zip(out, ref, ("hyp", "mean", "spread")):
        assert o.dtype == torch.float32, name
        torch.testing.assert_close(o, r.float(), **tol, msg=lambda m, name=name: f"{name}: {m}")


# ---------------------------------------------------------------------------------------------
# Triton (GPU, or the interpreter on the CPU)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def triton_device():
    skip_unless_backend("triton")
    return kernel_device("triton")


# skeleton (J), N, frames, flip, centre, eta: J 17/16/15, N 1 and 3, odd batches, flip on and off
TRITON_CASES = [("h36m17", 1, 1, False, False, 0.0), ("h36m17", 3, 3, True, True, 0.6),
                ("h36m16", 3, 1, False, True, 1.0), ("humaneva15", 1, 3, True, False, 0.6)]


@pytest.mark.parametrize("skeleton,n_hyp,frames,flip,center,eta", TRITON_CASES)
def test_triton_matches_reference(triton_device, skeleton, n_hyp, frames, flip, center, eta):
    model = _model(skeleton).to(triton_device)
    diffusion = Diffusion(DiffusionConfig(T=12, clip_x0=0.0))
    J = model.skeleton.num_joints
    y = torch.randn(frames, J, 2, device=triton_device) * 0.5
    out, ref, s_op, s_ref = _run("triton", model, diffusion, y, n_hyp=n_hyp, steps=2, eta=eta,
                                 flip=model.skeleton if flip else None, center=center)
    _check_close(out, ref, frames, n_hyp, J)
    assert s_op.tolist() == s_ref.tolist()  # advanced past the numbers used, as Diffusion.sample does


@pytest.mark.parametrize("act,blocks,d", [("relu", 2, 32), ("none", 0, 16)])
def test_triton_other_activations_depths_and_ddpm(triton_device, act, blocks, d):
    """DDPM (every one of T = 4 steps, noise in each), clip on, a padded counter stride."""
    model = _model(act=act, blocks=blocks, d=d).to(triton_device)
    diffusion = Diffusion(DiffusionConfig(T=4))  # the x0 clip on (its default)
    y = torch.randn(3, 17, 2, device=triton_device) * 0.5
    out, ref, _, _ = _run("triton", model, diffusion, y, n_hyp=2, ddpm=True, flip="h36m17", center=True,
                          counter_stride=3 * 2 * 17 * 3 + 77)
    _check_close(out, ref, 3, 2, 17)
    assert out[0][:, :, 0].abs().max() == 0  # centred exactly


def test_triton_gpu_tiling(triton_device):
    """The launcher's GPU tiles (64 rows, 64-channel chunks, K in 32-wide slices) wherever this runs:
    several programs with a ragged last tile, d 80 (a ragged last chunk), flip (one sample and its twin
    per tile) and without."""
    from diffupose.kernels import sample as K

    model = _model(d=80, blocks=1).to(triton_device)
    diffusion = Diffusion(DiffusionConfig(T=12, clip_x0=0.0))
    y = torch.randn(2, 17, 2, device=triton_device) * 0.5
    with mock.patch.object(K, "_big_tiles", lambda: False):
        for flip, n_hyp in ((None, 2), ("h36m17", 1)):  # 4 samples: tiles of 3 (+1), or 1 each
            out, ref, _, _ = _run("triton", model, diffusion, y, n_hyp=n_hyp, steps=2, eta=0.5, flip=flip)
            _check_close(out, ref, 2, n_hyp, 17)


def test_triton_same_seed_same_noise(triton_device):
    model, diffusion = _model().to(triton_device), Diffusion(DiffusionConfig(T=20))
    y = torch.randn(1, 17, 2, device=triton_device)
    kw = dict(n_hyp=3, steps=2, eta=1.0, backend="triton")
    s1, s2 = _state(triton_device, 7, 0), _state(triton_device, 7, 0)
    a = ops.sample(model, diffusion, y, rng_state=s1, **kw)[0]
    b = ops.sample(model, diffusion, y, rng_state=s2, **kw)[0]
    assert torch.equal(a, b)
    c = ops.sample(model, diffusion, y, rng_state=s1, **kw)[0]  # advanced state: fresh noise
    assert (c - a).abs().max() > 1e-2
    d = ops.sample(model, diffusion, y, rng_state=_state(triton_device, 8, 0), **kw)[0]  # another seed
    assert (d - a).abs().max() > 1e-2


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_triton_half_within_twice_pytorch_error(triton_device, dtype):
    """fp16 / bf16: the hidden GEMMs on fp16 tensor cores with fp32 accumulation; the error against
    an fp64 run at most 2x PyTorch sampling in the dtype itself."""
    _half_rule(triton_device, "triton", dtype)


def _half_rule(device, backend, dtype, d=16):
    model, diffusion = _model(d=d).to(device), Diffusion(DiffusionConfig(T=20))
    y = torch.randn(3, 17, 2, device=device) * 0.5
    kw = dict(n_hyp=2, steps=2, eta=0.5, flip=model.skeleton)
    model.double()  # the fp64 run; the timestep embedding and FiLMs stay float32 (test_sample.py says why)
    model.temb.float()
    model.net.films.float()
    ref64 = ops.sample_ref(model, diffusion, y.double(), rng_state=_state(device), dtype=torch.float64, **kw)
    model.float()
    same = ops.sample_ref(model, diffusion, y, rng_state=_state(device), dtype=dtype, **kw)
    out = ops.sample(model, diffusion, y, rng_state=_state(device), dtype=dtype, backend=backend, **kw)
    for o, s, r, name in zip(out, same, ref64, ("hyp", "mean", "spread")):
        assert_matches(o, r, s, factor=2.0, name=name)
    # the half dtype did take the fp16 GEMMs (an fp32 run differs from them)
    fp32 = ops.sample(model, diffusion, y, rng_state=_state(device), backend=backend, **kw)
    assert not torch.equal(out[0], fp32[0])


def test_triton_empty_batch_and_errors(triton_device):
    model, diffusion = _model().to(triton_device), Diffusion(DiffusionConfig(T=20))
    state = _state(triton_device)
    hyp, mean, spread = ops.sample(model, diffusion, torch.zeros(0, 17, 2, device=triton_device), n_hyp=3,
                                   rng_state=state, backend="triton")
    assert hyp.shape == (0, 3, 17, 3) and mean.shape == (0, 17, 3) and spread.shape == (0, 17)
    from diffupose.kernels.sample import sample_triton

    y = torch.randn(2, 17, 2, device=triton_device)
    weights = pack_weights(model)
    film = film_table(model, [8, 0], triton_device)
    args = [y, weights, film, [1.0] * 12, _state(triton_device), 1, 2 * 17 * 3, [], 2, 0, False]
    for i, bad, msg in [(1, weights[:-4], "4 tensors per layer"), (2, film[:, :1], "film must be"),
                        (3, [1.0] * 11, "coefs must hold 6"), (6, 5, "counter_stride 5"),
                        (7, [17] * 17, "flip_perm must be"), (1, [w.double() for w in weights], "float32")]:
        bad_args = list(args)
        bad_args[i] = bad
        with pytest.raises(ValueError, match=msg):
            sample_triton(*bad_args)


_COMPILE_SM90 = r"""
import inspect, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from diffupose.kernels import sample as K

def compile_(fn, sig, const, warps):
    names = list(inspect.signature(fn.fn).parameters)
    sig = dict(sig, **{k: "constexpr" for k in const})
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))

ptrs = dict(y_ptr="*fp32", w_ptr="*fp32", film_ptr="*fp32", coef_ptr="*fp32", perm_ptr="*i32", rng_ptr="*i64",
            rng_stride="i32", hyp_ptr="*fp32", ws_ptr="*fp32")
ints = {n: "i32" for n in ("M", "N", "J", "D", "NB", "S", "NS", "cstride", "root")}
k = compile_(K._sample_kernel, {**ptrs, **ints}, dict(ACT=2, FLIP=True, CENTER=True, NOISE=True, HALF=True, BM=64,
             BN=64, BK=32, EB=64, INTERP=False), 4)
assert k.metadata.shared <= 227 * 1024, k.metadata.shared  # an H100/H200 block's shared-memory limit
compile_(K._sample_aggregate_kernel, dict(hyp_ptr="*fp32", mean_ptr="*fp32", spread_ptr="*fp32", N="i32", J="i32"),
         dict(JB=32), 1)
print("compiled")
"""


def test_triton_kernels_compile_for_sm90():
    """The kernels through Triton's whole compiler (frontend types, loop-carried values, layouts,
    ptxas) for an H100/H200, without a GPU: what the interpreter cannot check. One variant (fp16 GEMMs,
    flip, centring, noise) holds every code path (the out layer takes the fp32 dots). In a child
    process: under TRITON_INTERPRET=1 the kernels are interpreted functions, not compilable ones."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", _COMPILE_SM90], env=env, capture_output=True, text=True, timeout=240)
    if r.returncode and "ptxas" in r.stderr.lower() and "not found" in r.stderr.lower():
        pytest.skip("this triton has no ptxas to compile for sm_90")
    assert r.returncode == 0 and "compiled" in r.stdout, r.stderr[-3000:]


def test_backend_switch():
    """CPU tensors: the C++ op by default, the Triton kernel when 'triton' is asked for (interpreter);
    CUDA tensors: cuda > triton, never the CPU op."""
    from diffupose.ops.sample import _op_for

    cpu = torch.device("cpu")
    if ops.has_extension():
        assert _op_for(cpu, None)[0] == "cpp" and _op_for(cpu, "cpu")[0] == "cpp"
    with pytest.raises(ops.BackendUnavailable):
        _op_for(cpu, "cuda")
    if ops.has_triton() and (torch.cuda.is_available() or kernel_device("triton").type == "cpu"):
        try:
            assert _op_for(kernel_device("triton"), "triton")[0] == "triton"
        except ops.BackendUnavailable:  # CPU without TRITON_INTERPRET=1
            pass
    if torch.cuda.is_available():
        want = "cpp" if ops.has_cuda_kernels() else "triton"
        assert _op_for(torch.device("cuda"), None)[0] == want


# ---------------------------------------------------------------------------------------------
# CUDA C++ (only where a GPU and the CUDA build are present)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def cuda_device():
    skip_unless_backend("cuda")
    return torch.device("cuda")


CUDA_CASES = [("h36m17", 1, 1, False, False), ("h36m17", 10, 3, True, True), ("h36m16", 3, 7, True, False),
              ("humaneva15", 10, 5, False, True)]


@pytest.mark.parametrize("skeleton,n_hyp,frames,flip,center", CUDA_CASES)
@pytest.mark.parametrize("sampler", ["ddim5", "ddpm"])
def test_cuda_matches_reference_and_cpu_op(cuda_device, skeleton, n_hyp, frames, flip, center, sampler):
    """Against sample_ref on the GPU and the CPU op for the same seed. DDPM's T = 40 steps take two
    launches of the persistent kernel (at most 32 steps each): the state crosses through hyp."""
    model = _model(skeleton, d=32)
    diffusion = Diffusion(DiffusionConfig(T=40, clip_x0=0.0))
    J = model.skeleton.num_joints
    y = torch.randn(frames, J, 2) * 0.5
    kw = dict(n_hyp=n_hyp, eta=0.6, flip=model.skeleton if flip else None, center=center,
              **(dict(steps=5) if sampler == "ddim5" else dict(ddpm=True)))
    cpu = ops.sample(model, diffusion, y, rng_state=_state("cpu"), **kw)
    model.to(cuda_device)
    out, ref, s_op, s_ref = _run("cuda", model, diffusion, y.to(cuda_device), **kw)
    _check_close(out, ref, frames, n_hyp, J)
    _check_close([o.cpu() for o in out], cpu, frames, n_hyp, J)
    assert s_op.tolist() == s_ref.tolist()


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_half_within_twice_pytorch_error(cuda_device, backend, dtype):
    """The tensor-core path (d 32: a multiple of 16) under the half rule, both GPU backends."""
    if backend == "triton":
        skip_unless_backend("triton")
    _half_rule(cuda_device, backend, dtype, d=32)


def test_cuda_full_size_model(cuda_device):
    """d_model 256, 4 blocks (the shipped size: the shared-memory opt-in), many tiles, flip: fp32
    against the CPU op, fp16 tensor cores within 1e-2 of it."""
    model = _model(d=256, blocks=4)
    diffusion = Diffusion(DiffusionConfig(T=20, clip_x0=0.0))
    y = torch.randn(33, 17, 2) * 0.5
    kw = dict(n_hyp=10, steps=5, eta=0.5, flip="h36m17", center=True)
    cpu = ops.sample(model, diffusion, y, rng_state=_state("cpu"), **kw)
    model.to(cuda_device)
    y = y.to(cuda_device)
    out = ops.sample(model, diffusion, y, rng_state=_state(cuda_device), backend="cuda", **kw)
    _check_close([o.cpu() for o in out], cpu, 33, 10, 17, tol=dict(rtol=1e-3, atol=1e-3))
    half = ops.sample(model, diffusion, y, rng_state=_state(cuda_device), backend="cuda", dtype=torch.float16, **kw)
    _check_close([o.cpu() for o in half], cpu, 33, 10, 17, tol=dict(rtol=1e-2, atol=1e-2))


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_captured_graph_draws_fresh_noise(cuda_device, backend):
    """Captured in a CUDA graph (after a warm-up call, as the engine does), a replay reads the live
    rng_state: each replay equals an eager call from the same state."""
    if backend == "triton":
        skip_unless_backend("triton")
    model, diffusion = _model().to(cuda_device), Diffusion(DiffusionConfig(T=20))
    y = torch.randn(3, 17, 2, device=cuda_device)
    kw = dict(n_hyp=4, steps=3, eta=1.0, flip="h36m17", backend=backend, counter_stride=3 * 4 * 17 * 3)
    state = _state(cuda_device, 5, 0)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ops.sample(model, diffusion, y, rng_state=state, **kw)  # warm-up: caches, shared-memory opt-in
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = ops.sample(model, diffusion, y, rng_state=state, **kw)
    for offset in (0, 12345):
        state.copy_(torch.tensor([5, offset]))
        graph.replay()
        eager = ops.sample(model, diffusion, y, rng_state=_state(cuda_device, 5, offset), **kw)
        for c, e in zip(captured, eager):
            torch.testing.assert_close(c, e, rtol=0, atol=0)
