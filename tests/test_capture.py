"""What a captured CUDA graph of the sampling loop needs, checked without a GPU.

- The loop body (`Lifter._run`: flip, denoiser, sampler steps, aggregation) issues no host sync
  and builds no tensor from host data: traced on the meta device under a dispatch mode that
  flags `.item()` / `.tolist()` on device tensors and any host tensor (other than a 0-dim scalar)
  reaching a device op. On a GPU either aborts stream capture.
- The graph cache: one graph per frame bucket and setting, capped, dropped when a parameter
  changes; padded replays give the eager results (a stand-in for the graph replays the loop).
- Launchers run under their tensors' device; a step dispatches a bounded number of ops.

The real capture runs in tests/test_engine.py and tests/test_capture.py's GPU tests (skipped here).
"""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from diffupose import engine
from diffupose.diffusion import Diffusion, DiffusionConfig
from diffupose.engine import Lifter, frame_bucket
from diffupose.model import ModelConfig, build_model
from diffupose.skeleton import H36M17, flip_pose

pytestmark = pytest.mark.usefixtures("one_thread")

META = torch.device("meta")


class _DispatchCheck(TorchDispatchMode):
    def __init__(self, report, device_type):
        super().__init__()
        self.report, self.device_type = report, device_type

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        on_dev = [t for t in tensors if t.device.type == self.device_type]
        if func is torch.ops.aten._local_scalar_dense.default and on_dev:
            self.report(f"host sync: {func}")
        host = [t for t in tensors if t.device.type == "cpu"]
        # a 0-dim host tensor is a scalar argument (no copy); anything else is a host-to-device copy
        if on_dev and any(t.dim() > 0 or "copy" in func.name() for t in host):
            self.report(f"host tensor into a device op: {func}")
        return func(*args, **kwargs)


class _FunctionCheck(TorchFunctionMode):
    """Tensors built from Python data on the device (torch.tensor(list, device=...), indexing with
    a Python list) are copied from the host below the dispatcher, so they are caught here."""

    def __init__(self, report, device_type):
        super().__init__()
        self.report, self.device_type = report, device_type

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in ("tolist", "item", "cpu", "numpy") and isinstance(args[0], torch.Tensor) and \
                args[0].device.type == self.device_type:
            self.report(f"host sync: Tensor.{name}")
        if name in ("tensor", "as_tensor", "asarray") and torch.device(kwargs.get("device") or "cpu").type == \
                self.device_type:
            self.report(f"tensor from host data on the device: torch.{name}")
        if name in ("__getitem__", "__setitem__") and isinstance(args[0], torch.Tensor) and \
                args[0].device.type == self.device_type:
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, (list, tuple)) for i in index):
                self.report(f"Python-list index on a device tensor: Tensor.{name}")
        return func(*args, **kwargs)


class CaptureChecker:
    """Records what would break stream capture on `device` (meta stands in for cuda): host syncs
    (.item(), .tolist()) and tensors made from host data going into device ops."""

    def __init__(self, device: torch.device = META):
        self.violations: list[str] = []
        self._modes = (_FunctionCheck(self.violations.append, device.type),
                       _DispatchCheck(self.violations.append, device.type))

    def __enter__(self):
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc):
        for m in reversed(self._modes):
            m.__exit__(*exc)
        return False


def _model(**kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(**{"d_model": 16, "n_blocks": 1, "d_time": 8, **kw}))


def test_checker_catches_host_index_and_sync():
    """The checker itself: the two patterns the loop used to have are flagged."""
    pose = torch.zeros(2, 17, 3, device=META)
    with CaptureChecker() as c:
        pose[..., list(H36M17.flip_permutation), :]
    assert any("Python-list index" in v for v in c.violations)
    with CaptureChecker() as c:
        torch.as_tensor(3, device=META)
    assert any("host data" in v for v in c.violations)
    with CaptureChecker() as c, pytest.raises(RuntimeError):  # meta refuses it too; cuda would copy
        pose + torch.zeros(3)
    assert any("host tensor into a device op" in v for v in c.violations)
    state = torch.zeros(2, dtype=torch.int64, device=META)
    with CaptureChecker() as c, pytest.raises(NotImplementedError):
        state.tolist()
    assert any("host sync" in v for v in c.violations)


def test_flip_pose_is_capture_safe():
    pose = torch.zeros(3, 17, 3, device=META)
    flip_pose(pose, H36M17)  # first use makes the cached index (the engine's warm-up does this)
    with CaptureChecker() as c:
        flip_pose(pose, H36M17)
    assert c.violations == []


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("sampler,aggregate,center_root", [("ddim", "mean", True), ("ddpm", "median", False)])
def test_loop_body_is_capture_safe(backend, flip, sampler, aggregate, center_root):
    """The body _CapturedLoop captures, after its warm-up run, on meta tensors."""
    from tests.helpers import skip_unless_backend

    if backend == "cpu":
        skip_unless_backend("cpu")  # its fake (meta) kernels are registered with the extension
    diff = Diffusion(DiffusionConfig(T=6))
    lift = Lifter(_model().to(META), diff, device=META, backend=backend, cuda_graph=False, flip=flip, n_hyp=2,
                  steps=2, sampler=sampler, aggregate=aggregate, center_root=center_root)
    y = torch.zeros(4, 17, 2, device=META)
    with torch.no_grad():
        lift._run(y, 4)  # warm-up: fills the inference caches and the flip index
        with CaptureChecker() as c:
            lift._run(y, 4)
    assert c.violations == []


def test_reference_noise_is_drawn_on_the_device():
    """sampler_step_ref reads rng_state on the device: same numbers as before (the CPU stream)."""
    from diffupose.ops import NOISE_COEFS, philox_normal_ref, sampler_step_ref

    state = torch.tensor([2**63 + 5 - 2**64, 2**35 + 7])  # a seed >= 2^63 stored as a negative int64
    zeros = torch.zeros(4, 17, 3)
    z = sampler_step_ref(zeros, zeros, state, 11, NOISE_COEFS)[0].flatten()
    expect = philox_normal_ref(2**63 + 5, 2**35 + 18 + torch.arange(z.numel()))
    assert torch.equal(z, expect)
    with CaptureChecker() as c:
        sampler_step_ref(zeros.to(META), zeros.to(META), state.to(META), 11, NOISE_COEFS)
    assert c.violations == []


# ---------------------------------------------------------------------------------------------
# the graph cache, with a stand-in for the CUDA graph (replay = run the loop on the static buffer)
# ---------------------------------------------------------------------------------------------
class _FakeGraph:
    def __init__(self, loop, run):
        self.loop, self.run = loop, run

    def replay(self):
        self.loop.out = self.run(self.loop.y)


class _FakeCapturedLoop(engine._CapturedLoop):
    captures = 0

    def __init__(self, run, frames, J, rng_state, model):
        type(self).captures += 1
        self.frames, self.device = frames, rng_state.device
        self.y = torch.zeros(frames, J, 2, device=self.device)
        state0 = rng_state.clone()
        run(self.y)  # the warm-up (fills the caches), its draws undone as the real one does
        rng_state.copy_(state0)
        self.graph = _FakeGraph(self, run)
        self.cache_refs = engine.inference_cache_refs(model)


@pytest.fixture
def fake_graphs(monkeypatch):
    _FakeCapturedLoop.captures = 0
    monkeypatch.setattr(engine, "_CapturedLoop", _FakeCapturedLoop)
    return _FakeCapturedLoop


def _graph_lifter(model, **kw):
    lift = Lifter(model, Diffusion(DiffusionConfig(T=8)), backend="reference", cuda_graph=False, **kw)
    lift.use_graph = True  # the cache logic of the CUDA path, with the stand-in graphs
    return lift


def test_frame_bucket():
    assert [frame_bucket(n, 1024) for n in (1, 2, 3, 4, 5, 1000, 1024)] == [1, 2, 4, 4, 8, 1024, 1024]
    assert frame_bucket(5, 6) == 6 and frame_bucket(7, 6) == 6


def test_padded_buckets_match_eager(fake_graphs):
    model = _model()
    y = torch.randn(11, 17, 2) * 0.3
    for F in (5, 11):  # bucket 8 (padded); batches of 8 with a ragged last one
        eager = Lifter(model, Diffusion(DiffusionConfig(T=8)), backend="reference", cuda_graph=False, n_hyp=3,
                       steps=2, seed=4, batch_frames=8, flip=True)(y[:F])
        graphed = _graph_lifter(model, n_hyp=3, steps=2, seed=4, batch_frames=8, flip=True)(y[:F])
        torch.testing.assert_close(graphed.hypotheses, eager.hypotheses, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(graphed.spread, eager.spread, rtol=1e-5, atol=1e-6)


def test_graphs_are_bucketed_capped_and_keyed(fake_graphs):
    lift = _graph_lifter(_model(), n_hyp=2, steps=2, batch_frames=64, max_graphs=2)
    for F in (3, 4, 2, 3):  # buckets 4, 4, 2, 4
        lift(torch.randn(F, 17, 2))
    assert fake_graphs.captures == 2 and len(lift._graphs) == 2
    lift(torch.randn(7, 17, 2))  # bucket 8: a third graph, the least recently used (2) dropped
    assert fake_graphs.captures == 3 and [k[0] for k in lift._graphs] == [4, 8]
    # settings the loop bakes in as constants get their own graph
    lift.center_root = False
    lift(torch.randn(7, 17, 2))
    lift.diffusion.cfg.pose_scale = 0.5
    lift(torch.randn(7, 17, 2))
    assert fake_graphs.captures == 5


def test_graphs_dropped_when_parameters_change(fake_graphs):
    model = _model()
    lift = _graph_lifter(model, n_hyp=2, steps=2)
    y = torch.randn(4, 17, 2)
    lift(y)
    loop = next(iter(lift._graphs.values()))
    old_affinity = model.net.inp._affinity_cache[1]
    assert any(ref is model.net.inp._affinity_cache for ref in loop.cache_refs)  # held by the graph
    lift(y)
    assert fake_graphs.captures == 1
    with torch.no_grad():
        model.net.inp.P.mul_(1.5)  # an optimizer step: in place, the version counter moves
    after = lift(y)
    assert fake_graphs.captures == 2 and loop not in lift._graphs.values()
    assert model.net.inp._affinity_cache[1] is not old_affinity  # the cache was rebuilt, not reused
    lift.reseed(0)
    eager = Lifter(model, lift.diffusion, backend="reference", cuda_graph=False, n_hyp=2, steps=2)(y)
    lift.reseed(0)
    torch.testing.assert_close(lift(y).hypotheses, eager.hypotheses, rtol=1e-5, atol=1e-6)
    assert not torch.equal(after.hypotheses, eager.hypotheses)  # (fresh noise: a different draw)


# ---------------------------------------------------------------------------------------------
# device guards
# ---------------------------------------------------------------------------------------------
def test_device_guards_name_the_tensors_device():
    from diffupose.kernels.launch import device_guard

    guard = engine.cuda_device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    fake = type("T", (), {"device": torch.device("cuda", 1)})()
    guard = device_guard(fake)
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(device_guard(torch.zeros(1)), torch.cuda.device)


@pytest.mark.parametrize("which", ["sampler", "mgcn"])
def test_triton_launchers_enter_the_device_guard(monkeypatch, which):
    from tests.helpers import skip_unless_backend

    skip_unless_backend("triton")
    from diffupose.kernels import mgcn as KM, sampler as KS
    from diffupose.ops import NOISE_COEFS, mgcn, sampler_step

    seen = []
    real = KS.device_guard

    def recording(t):
        seen.append(t.device)
        return real(t)

    monkeypatch.setattr(KS if which == "sampler" else KM, "device_guard", recording)
    x = torch.zeros(2, 17, 3)
    if which == "sampler":
        sampler_step(x, x, torch.tensor([0, 0]), 0, NOISE_COEFS, backend="triton")
    else:
        w, m, a, b = torch.randn(2, 3, 8), torch.ones(17, 8), torch.eye(17), torch.zeros(8)
        with torch.no_grad():
            mgcn(x, w, m, a, b, backend="triton")
    assert seen == [x.device]


# ---------------------------------------------------------------------------------------------
# the launch budget of one denoiser step
# ---------------------------------------------------------------------------------------------
class _OpCounter(TorchDispatchMode):
    """Top-level ops that do work (views and allocations launch no kernel)."""

    # allocations launch nothing; _local_scalar_dense here reads the host-side schedule (plan())
    FREE = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "lift_fresh", "_local_scalar_dense"}

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        if not func.is_view and name.split("::")[-1].split(".")[0] not in self.FREE:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def _ops_of_run(lift, y, steps):
    lift.steps = steps
    with torch.no_grad():
        lift._run(y, y.shape[0])  # warm: caches filled
        with _OpCounter() as c:
            lift._run(y, y.shape[0])
    return c.ops


def _step_ops(backend, dtype, flip, n_blocks=2, fused_sampler=False):
    # the per-layer path by default (on the CPU the Lifter's default is the whole-sampler op)
    lift = Lifter(_model(n_blocks=n_blocks), Diffusion(DiffusionConfig(T=8)), backend=backend, cuda_graph=False,
                  n_hyp=2, dtype=dtype, flip=flip, fused_sampler=fused_sampler)
    y = torch.randn(3, 17, 2)
    ops2, ops3 = _ops_of_run(lift, y, 2), _ops_of_run(lift, y, 3)
    return ops2, ops3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("flip", [False, True])
def test_step_op_budget_cpu(dtype, flip):
    """Ops one more DDIM step adds (cpu backend): the input concat, one op per graph convolution,
    the sampler step; at bf16 the one cast of the fp32 sampler state; with flip the mirrored x
    (index_select, sign, concat) and the averaging of the two predictions (4)."""
    from tests.helpers import skip_unless_backend

    skip_unless_backend("cpu")
    n_blocks = 2
    ops2, ops3 = _step_ops("cpu", dtype, flip, n_blocks)
    step = len(ops3) - len(ops2)
    layers = 2 + 2 * n_blocks
    budget = 1 + layers + 1 + (dtype != torch.float32) + (7 if flip else 0)
    assert ops3.count("diffupose::mgcn_fwd") - ops2.count("diffupose::mgcn_fwd") == layers  # the flip shares them
    assert step <= budget, f"one step dispatches {step} ops > budget {budget}: {ops3}"


@pytest.mark.parametrize("flip", [False, True])
def test_fused_sampler_is_one_op_whatever_the_steps(flip):
    """The whole-sampler op (diffupose::sample): one op per call, however many steps, and the
    few ops around it (output scaling) do not grow with the steps."""
    from tests.helpers import skip_unless_backend

    skip_unless_backend("cpu")
    ops2, ops3 = _step_ops("cpu", torch.float32, flip, fused_sampler=True)
    assert ops2.count("diffupose::sample") == ops3.count("diffupose::sample") == 1
    assert len(ops3) == len(ops2), f"a step more added ops around the fused sampler: {ops2} -> {ops3}"
    assert "diffupose::mgcn_fwd" not in ops3 and "diffupose::sampler_step" not in ops3


def test_step_launch_budget_triton(monkeypatch):
    """Kernels one more step launches on the Triton path (interpreter): top-level torch ops other
    than the Triton ops themselves, plus the Triton launches: concat + one per convolution + the
    sampler step (eps read in place: no copy)."""
    from tests.helpers import skip_unless_backend

    skip_unless_backend("triton")
    if torch.cuda.is_available():
        pytest.skip("counts launches through the Triton interpreter")
    from triton.runtime.interpreter import InterpretedFunction

    launches = []
    real_run = InterpretedFunction.run

    def counting_run(self, *args, **kwargs):
        launches.append(getattr(self.fn, "__name__", "?"))
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", counting_run)
    n_blocks = 1
    lift = Lifter(_model(n_blocks=n_blocks), Diffusion(DiffusionConfig(T=8)), backend="triton", cuda_graph=False,
                  n_hyp=2)
    y = torch.randn(2, 17, 2)
    counts = []
    for steps in (2, 3):
        lift.steps = steps
        with torch.no_grad():
            lift._run(y, 2)
            launches.clear()
            with _OpCounter() as c:
                lift._run(y, 2)
        torch_ops = [o for o in c.ops if not o.startswith("diffupose::")]
        counts.append(len(torch_ops) + len(launches))
    layers = 2 + 2 * n_blocks
    assert counts[1] - counts[0] <= 1 + layers + 1


# ---------------------------------------------------------------------------------------------
# on a GPU: the real capture (skipped here)
# ---------------------------------------------------------------------------------------------
def _cuda_pair(backend, device="cuda", **kw):
    from tests.helpers import skip_unless_backend

    if not torch.cuda.is_available():
        pytest.skip("CUDA graphs need a GPU (none on this machine)")
    if backend != "reference":
        skip_unless_backend(backend)
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=64, n_blocks=2)).to(device)
    diff = Diffusion(DiffusionConfig())
    args = dict(n_hyp=4, steps=3, batch_frames=16, seed=3, backend=backend, device=device, **kw)
    return model, Lifter(model, diff, cuda_graph=False, **args), Lifter(model, diff, cuda_graph=True, **args)


@pytest.mark.parametrize("backend", ["cuda", "triton", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graph_with_flip_matches_eager_on_cuda(backend, dtype):
    _, eager, graphed = _cuda_pair(backend, flip=True, dtype=dtype)
    y = torch.randn(21, 17, 2, device="cuda") * 0.3  # a full batch and a padded one of 5 (bucket 16)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(graphed(y).hypotheses, eager(y).hypotheses, rtol=tol, atol=tol)
    torch.testing.assert_close(graphed(y[:3]).hypotheses, eager(y[:3]).hypotheses, rtol=tol, atol=tol)  # bucket 4


def test_graph_follows_parameter_updates_on_cuda():
    model, eager, graphed = _cuda_pair("auto")
    y = torch.randn(8, 17, 2, device="cuda") * 0.3
    graphed(y)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.01)
    graphed.reseed(3)
    eager.reseed(3)
    torch.testing.assert_close(graphed(y).hypotheses, eager(y).hypotheses, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_graph_on_second_gpu(backend):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    _, eager, graphed = _cuda_pair(backend, device="cuda:1")
    y = torch.randn(16, 17, 2, device="cuda:1") * 0.3
    with torch.cuda.device(0):  # the current device is not the lifter's
        torch.testing.assert_close(graphed(y).hypotheses, eager(y).hypotheses, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_step_kernel_budget_on_cuda(backend, dtype):
    """GPU kernels one more DDIM step launches (profiler): the concat, per graph convolution one GEMM
    and one epilogue kernel on CUDA (one fused kernel on Triton) plus the x cast at half on CUDA,
    the cast of the sampler state at half, the sampler step."""
    from torch.autograd import DeviceType

    model, eager, _ = _cuda_pair(backend, dtype=dtype)
    y = torch.randn(8, 17, 2, device="cuda") * 0.3
    n_blocks = 2
    layers = 2 + 2 * n_blocks
    counts = []
    for steps in (2, 3):
        eager.steps = steps
        with torch.no_grad():
            eager._run(y, 8)
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                eager._run(y, 8)
                torch.cuda.synchronize()
        # a GEMM is one launch of ours even where cuBLAS's heuristics add a split-K reduction kernel
        counts.append(sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA and "splitKreduce" not in e.name))
    half = dtype != torch.float32
    per_layer = (2 + half) if backend == "cuda" else 1
    budget = 1 + layers * per_layer + half + 1
    assert counts[1] - counts[0] <= budget, f"{counts[1] - counts[0]} kernels per step > {budget}"
