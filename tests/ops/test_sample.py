"""diffupose::sample (the whole sampler as one CPU op) against its definition: the model and
Diffusion.sample on the reference backend, then Lifter's root centring."""
import pytest
import torch

from diffupose import ops
from diffupose.diffusion import Diffusion, DiffusionConfig
from diffupose.engine import Lifter
from diffupose.model import GCNDenoiser, MLPDenoiser, ModelConfig
from diffupose.ops.sample import film_table, pack_weights
from tests.helpers import HALF_DTYPES, assert_matches, poisoned

pytestmark = pytest.mark.skipif(not ops.has_extension(), reason="diffupose._C is not built")

TOL = dict(rtol=1e-4, atol=1e-4)


def _model(skeleton="h36m17", d=16, blocks=2, act="silu", seed=0) -> GCNDenoiser:
    """A tiny denoiser with every parameter moved off its initialisation (FiLM is zero-initialised,
    M and P start at 1), small enough that the x0 estimates stay inside the clip range."""
    torch.manual_seed(seed)
    model = GCNDenoiser(ModelConfig(skeleton=skeleton, d_model=d, n_blocks=blocks, d_time=16, act=act)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.2 * torch.randn_like(p) * (p.abs().mean() + 0.05))
        for name, b in model.named_buffers():  # a batch norm's statistics (folded into the packed weights)
            if name.endswith("running_mean"):
                b.add_(0.1 * torch.randn_like(b))
            elif name.endswith("running_var"):
                b.mul_(torch.empty_like(b).uniform_(0.5, 2.0))
    assert model.cfg.norm == "none" or any(n.endswith("running_var") for n, _ in model.named_buffers())
    return model


def _state(seed=1234, offset=99) -> torch.Tensor:
    return torch.tensor([seed, offset], dtype=torch.int64)


SAMPLERS = {"ddim2": dict(steps=2), "ddim5": dict(steps=5), "ddpm": dict(ddpm=True)}
SHAPES = [("h36m17", 1, 1), ("h36m16", 10, 3), ("humaneva15", 1, 7)]  # skeleton, N, frames


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("eta", [0.0, 0.6])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("skeleton,n_hyp,frames", SHAPES)
def test_matches_reference(sampler, eta, flip, skeleton, n_hyp, frames):
    model = _model(skeleton)
    # DDPM runs all T steps: a small T keeps it quick. No x0 clip: with a random model most x0
    # estimates would sit on the clip, where any eps passes (the clip: the test below)
    diffusion = Diffusion(DiffusionConfig(T=12, clip_x0=0.0))
    J = model.skeleton.num_joints
    y = torch.randn(frames, J, 2) * 0.5
    kw = dict(n_hyp=n_hyp, eta=eta, flip=model.skeleton if flip else None, **SAMPLERS[sampler])
    center = frames % 2 == 1
    s_ref, s_op = _state(), _state()
    ref = ops.sample_ref(model, diffusion, y, rng_state=s_ref, center=center, **kw)
    with poisoned():  # an element the kernel does not write is NaN and fails below
        out = ops.sample(model, diffusion, y, rng_state=s_op, center=center, **kw)
    assert [o.shape for o in out] == [(frames, n_hyp, J, 3), (frames, J, 3), (frames, J)]
    for o, r in zip(out, ref):
        assert o.dtype == torch.float32
        torch.testing.assert_close(o, r.float(), **TOL)
    assert s_op.tolist() == s_ref.tolist()  # advanced past the numbers used, as Diffusion.sample does


@pytest.mark.parametrize("act,blocks", [("relu", 1), ("none", 0)])
def test_other_activations_and_depths(act, blocks):
    model, diffusion = _model(act=act, blocks=blocks), Diffusion(DiffusionConfig(T=20, clip_x0=0.0))
    y = torch.randn(3, 17, 2)
    kw = dict(n_hyp=2, steps=3, eta=0.5, flip="h36m17", center=True)
    ref = ops.sample_ref(model, diffusion, y, rng_state=_state(), **kw)
    out = ops.sample(model, diffusion, y, rng_state=_state(), **kw)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r, **TOL)


def test_counter_stride_clip_and_no_centring():
    """A padded caller's counter stride draws the same noise per element; the x0 clip (on by
    default) is applied; without centring the mean and spread are the plain ones of the hypotheses."""
    model, diffusion = _model(), Diffusion(DiffusionConfig(T=20))
    y = torch.randn(3, 17, 2)
    kw = dict(n_hyp=4, steps=3, eta=1.0, counter_stride=3 * 4 * 17 * 3 + 500)
    ref = ops.sample_ref(model, diffusion, y, rng_state=_state(), **kw)
    hyp, mean, spread = ops.sample(model, diffusion, y, rng_state=_state(), **kw)
    torch.testing.assert_close(hyp, ref[0], **TOL)
    torch.testing.assert_close(mean, hyp.mean(1), **TOL)
    torch.testing.assert_close(spread, (hyp - mean[:, None]).square().sum(-1).mean(1).sqrt(), **TOL)
    # the root is not at 0 without centring, and is exactly with it
    assert hyp[:, :, 0].abs().max() > 1e-3
    hyp_c, _, _ = ops.sample(model, diffusion, y, rng_state=_state(), center=True, **kw)
    assert hyp_c[:, :, 0].abs().max() == 0


@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("flip", [False, True])
def test_half_dtype_within_twice_pytorch_error(dtype, flip):
    """The op computes in float32 whatever the activation dtype: its error against an fp64 run is
    at most ~2x that of PyTorch sampling in the dtype itself (and in practice far below)."""
    model, diffusion = _model(), Diffusion(DiffusionConfig(T=20))
    y = torch.randn(3, 17, 2) * 0.5
    kw = dict(n_hyp=4, steps=5, eta=0.5, flip=model.skeleton if flip else None)
    # the fp64 run: graph convolutions in fp64; the timestep embedding makes float32 features, so it
    # and the FiLMs stay float32 (their scale-shifts are the op's input, the same for every run)
    model.double()
    model.temb.float()
    model.net.films.float()
    ref64 = ops.sample_ref(model, diffusion, y.double(), rng_state=_state(), dtype=torch.float64, **kw)
    model.float()
    same = ops.sample_ref(model, diffusion, y, rng_state=_state(), dtype=dtype, **kw)
    out = ops.sample(model, diffusion, y, rng_state=_state(), dtype=dtype, **kw)
    for o, s, r, name in zip(out, same, ref64, ("hyp", "mean", "spread")):
        assert_matches(o, r, s, factor=2.0, name=name)


def test_same_seed_same_noise_and_fresh_noise_after_advance():
    model, diffusion = _model(), Diffusion(DiffusionConfig(T=20))
    y = torch.randn(2, 17, 2)
    s1, s2 = _state(7, 0), _state(7, 0)
    a = ops.sample(model, diffusion, y, n_hyp=3, eta=1.0, rng_state=s1)
    b = ops.sample(model, diffusion, y, n_hyp=3, eta=1.0, rng_state=s2)
    assert torch.equal(a[0], b[0])
    c = ops.sample(model, diffusion, y, n_hyp=3, eta=1.0, rng_state=s1)  # advanced state: new noise
    assert (c[0] - a[0]).abs().max() > 1e-2
    d = ops.sample(model, diffusion, y, n_hyp=3, eta=1.0, rng_state=_state(8, 0))  # another seed
    assert (d[0] - a[0]).abs().max() > 1e-2


def test_thread_count_does_not_change_the_result():
    """The noise is keyed by the global element and every sample is computed alone: tiles and
    threads only schedule the work."""
    model, diffusion = _model(d=32), Diffusion(DiffusionConfig(T=20))
    y = torch.randn(9, 17, 2)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.sample(model, diffusion, y, n_hyp=5, eta=0.5, rng_state=_state(), flip="h36m17")
        torch.set_num_threads(2)
        two = ops.sample(model, diffusion, y, n_hyp=5, eta=0.5, rng_state=_state(), flip="h36m17")
    finally:
        torch.set_num_threads(n)
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("change", ["in_place", "optimizer", "affinity", "film", "replace", "running_stats"])
def test_packed_weights_follow_parameter_changes(change):
    model, diffusion = _model(), Diffusion(DiffusionConfig(T=20))
    y = torch.randn(2, 17, 2)
    before = ops.sample(model, diffusion, y, n_hyp=2, rng_state=_state())[0]
    packed = pack_weights(model)
    assert pack_weights(model) is packed  # cached while nothing changes
    conv = model.net.convs1[0]
    if change == "in_place":
        with torch.no_grad():
            conv.W.mul_(1.5)
    elif change == "optimizer":
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        with torch.enable_grad():
            loss, _ = diffusion.loss(model, torch.randn(4, 17, 3), torch.randn(4, 17, 2), torch.ones(17))
            loss.backward()
        opt.step()
    elif change == "affinity":
        with torch.no_grad():
            conv.Q.add_(0.3)
    elif change == "film":
        with torch.no_grad():
            model.net.films[0].proj.bias.add_(0.5)
    elif change == "running_stats":  # a batch norm's statistics after more training
        with torch.no_grad():
            conv.norm.running_var.mul_(3.0)
    else:  # a new tensor in place of the parameter (load_state_dict(assign=True) does this)
        conv.bias = torch.nn.Parameter(conv.bias.detach() + 0.5)
    after = ops.sample(model, diffusion, y, n_hyp=2, rng_state=_state())[0]
    ref = ops.sample_ref(model, diffusion, y, n_hyp=2, rng_state=_state())[0]
    torch.testing.assert_close(after, ref, **TOL)
    assert (after - before).abs().max() > 1e-4


def test_empty_batch():
    model, diffusion = _model(), Diffusion(DiffusionConfig(T=20))
    state = _state()
    hyp, mean, spread = ops.sample(model, diffusion, torch.zeros(0, 17, 2), n_hyp=3, rng_state=state)
    assert hyp.shape == (0, 3, 17, 3) and mean.shape == (0, 17, 3) and spread.shape == (0, 17)
    assert state.tolist() == [1234, 99]


def test_bad_inputs_give_clear_errors():
    model, diffusion = _model(), Diffusion(DiffusionConfig(T=20))
    y = torch.randn(2, 17, 2)
    with pytest.raises(ValueError, match="16 joints, the model 17"):
        ops.sample(model, diffusion, torch.randn(2, 16, 2))
    with pytest.raises(ValueError, match=r"\[frames, joints, 2\]"):
        ops.sample(model, diffusion, torch.randn(2, 17, 3))
    with pytest.raises(ValueError, match="runs a GCNDenoiser, got MLPDenoiser"):
        ops.sample(MLPDenoiser(ModelConfig(arch="mlp", d_model=16, n_blocks=1, d_time=16)), diffusion, y)
    with pytest.raises(ValueError, match="rng_state must be an int64"):
        ops.sample(model, diffusion, y, rng_state=torch.zeros(2))
    with pytest.raises(ValueError, match="counter_stride 10 is smaller"):
        ops.sample(model, diffusion, y, counter_stride=10)
    with pytest.raises(ValueError, match="n_hyp must be >= 1"):
        ops.sample(model, diffusion, y, n_hyp=0)
    # the op itself checks what it is handed (one line, naming the argument)
    weights = pack_weights(model)
    film = torch.zeros(5, 2, 2, 16)
    args = [y, weights, film, [1.0] * 30, _state(), 1, 2 * 17 * 3, [], 2, 0, False]
    op = torch.ops.diffupose.sample
    cut = weights[:-4] + [weights[-4][:, :4].contiguous()] + weights[-3:]
    for i, bad, msg in [(1, weights[:-4], "4 tensors per layer"), (1, cut, r"layer 5 w must be \[16, 6\]"), (1, [w.double() for w in weights], "float32"),
                        (2, film[:, :1], "film must be"), (3, [1.0] * 29, "coefs must hold 6"),
                        (6, 5, "counter_stride 5"), (7, [0] * 16, "flip_perm must be empty or 17"),
                        (7, [17] * 17, "not a joint"), (9, 17, "root 17")]:
        bad_args = list(args)
        bad_args[i] = bad
        with pytest.raises(RuntimeError, match=msg):
            op(*bad_args)


def test_fake_kernel_and_schema():
    model, diffusion = _model(), Diffusion(DiffusionConfig(T=20))
    plan = diffusion.plan(3)
    film = film_table(model, [t for t, _ in plan], torch.device("cpu"))
    args = (torch.randn(2, 17, 2), pack_weights(model), film, [v for _, c in plan for v in c.as_args()], _state(), 3,
            2 * 3 * 17 * 3, [], 2, 0, True)
    torch.library.opcheck(torch.ops.diffupose.sample.default, args,
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("aggregate", ["mean", "median"])
def test_lifter_fused_matches_per_layer_path(aggregate):
    """Lifter's default on the CPU is the fused op; fused_sampler=False keeps the per-layer path:
    the same results, also for a ragged last batch (the counter stride of a full one)."""
    model, diffusion = _model(), Diffusion(DiffusionConfig(T=20))
    y = torch.randn(5, 17, 2) * 0.5
    kw = dict(n_hyp=3, steps=4, eta=0.5, flip=True, aggregate=aggregate, batch_frames=2, seed=3)
    assert Lifter(model, diffusion, **kw).fused_sampler is None  # default: decided per call
    assert ops.fused_sampler_available(model, "cpu")
    fused = Lifter(model, diffusion, **kw)
    layers = Lifter(model, diffusion, fused_sampler=False, backend="reference", **kw)
    for _ in range(2):  # the second call draws fresh noise on both
        a, b = fused(y), layers(y)
        for name in ("mean", "hypotheses", "spread"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), **TOL)
    assert torch.equal(fused.rng_state, layers.rng_state)


def test_lifter_keeps_the_old_path_where_the_op_does_not_apply():
    diffusion = Diffusion(DiffusionConfig(T=20))
    mlp = MLPDenoiser(ModelConfig(arch="mlp", d_model=16, n_blocks=1, d_time=16)).eval()
    assert not ops.fused_sampler_available(mlp, "cpu")
    assert not ops.fused_sampler_available(_model(), "cpu", torch.float64)
    assert not ops.fused_sampler_available(_model(), "cpu", backend="reference")
    out = Lifter(mlp, diffusion, n_hyp=2, steps=2)(torch.randn(2, 17, 2))
    assert out.hypotheses.shape == (2, 2, 17, 3)
    with pytest.raises(ValueError, match="runs a GCNDenoiser"):
        Lifter(mlp, diffusion, n_hyp=2, steps=2, fused_sampler=True)(torch.randn(2, 17, 2))


@pytest.mark.parametrize("d", [8, 20, 40])
def test_widths_that_are_not_whole_panels(d):
    """The op's GEMM runs in panels of one vector register (4, 8 or 16 channels by instruction
    set); a width that leaves a narrow last panel (or is narrower than one) takes the narrow path."""
    model, diffusion = _model(d=d, blocks=1, seed=3), Diffusion(DiffusionConfig(T=20, clip_x0=0.0))
    y = torch.randn(4, 17, 2) * 0.5
    with poisoned():
        got = ops.sample(model, diffusion, y, n_hyp=3, steps=5, rng_state=_state(), flip="h36m17", center=True)
    want = ops.sample_ref(model, diffusion, y, n_hyp=3, steps=5, rng_state=_state(), flip="h36m17", center=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL)


@pytest.mark.parametrize("n_hyp,flip", [(1, False), (3, False), (1, True)])
def test_a_team_of_threads_gives_one_threads_result(n_hyp, flip):
    """A small call is one tile split over a team of threads by channel panels: bit for bit the
    result of one thread (the panels' arithmetic does not depend on who computes them), and the
    team really ran (the hook counts team calls; a width of 128 gives every member >= 4 panels)."""
    from diffupose import _C

    model, diffusion = _model(d=128, blocks=1, seed=4), Diffusion(DiffusionConfig(T=20, clip_x0=0.0))
    y = torch.randn(1, 17, 2) * 0.5
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.sample(model, diffusion, y, n_hyp=n_hyp, eta=0.5, rng_state=_state(), flip="h36m17" if flip else None)
        torch.set_num_threads(2)
        _C.sample_team_calls(reset=True)
        with poisoned():
            two = ops.sample(model, diffusion, y, n_hyp=n_hyp, eta=0.5, rng_state=_state(),
                             flip="h36m17" if flip else None)
        teamed = _C.sample_team_calls()[0]
    finally:
        torch.set_num_threads(n)
    assert teamed == 1
    for a, b in zip(one, two):
        assert torch.equal(a, b)
    ref = ops.sample_ref(model, diffusion, y, n_hyp=n_hyp, eta=0.5, rng_state=_state(), flip="h36m17" if flip else None)
    for a, w in zip(two, ref):
        torch.testing.assert_close(a, w, **TOL)
