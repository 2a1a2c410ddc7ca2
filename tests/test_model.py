import pytest
import torch

from diffupose.diffusion import Diffusion, DiffusionConfig, joint_weights
from diffupose.model import ARCHS, GCNDenoiser, ModelConfig, build_model, count_parameters, is_regressor


def gcn_count(J, d, L, dt):
    conv = lambda ci, co: 2 * ci * co + J * co + 2 * J * J + co  # W, M, P, Q, bias  # noqa: E731
    temb = 2 * (dt * dt + dt)
    film = L * (dt * 2 * d + 2 * d)
    return conv(5, d) + 2 * L * conv(d, d) + conv(d, 5) + temb + film


@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("d,L", [(256, 4), (384, 4), (64, 2)])
def test_gcn_parameter_count(d, L, norm):
    bn = (1 + 2 * L) * 2 * d if norm == "batch" else 0  # gamma and beta after every conv but the output one
    assert count_parameters(GCNDenoiser(ModelConfig(d_model=d, n_blocks=L, norm=norm))) == gcn_count(17, d, L, 128) + bn


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("skeleton,J", [("h36m17", 17), ("h36m16", 16), ("humaneva15", 15)])
def test_shapes(arch, skeleton, J):
    m = build_model(ModelConfig(arch=arch, skeleton=skeleton, d_model=32, n_blocks=2, d_time=16))
    y = torch.randn(5, J, 2)
    if is_regressor(m):
        assert m(y, backend="reference").shape == (5, J, 3)
        return
    for t in (torch.tensor([3]), torch.randint(0, 100, (5,))):
        eps, y_hat = m(torch.randn(5, J, 3), y, t, backend="reference")
        assert eps.shape == (5, J, 3) and y_hat.shape == (5, J, 2)


def test_baselines_match_the_gcn_size():
    base = count_parameters(build_model(ModelConfig()))
    for arch in ("mlp", "unet"):
        n = count_parameters(build_model(ModelConfig(arch=arch)))
        assert abs(n - base) / base < 0.05, (arch, n, base)


def test_tiny_model_loss_falls_on_tiny_data():
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=32, n_blocks=1, d_time=16))
    diff = Diffusion(DiffusionConfig())
    x0 = torch.randn(64, 17, 3) * 0.5
    y = x0[..., :2] / (2 + x0[..., 2:])  # a projection-like condition
    w = joint_weights("extremities", model.skeleton)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    fixed_t = torch.randint(0, 100, (64,), generator=gen)
    fixed_n = torch.randn(64, 17, 3, generator=gen)

    def eval_loss():
        with torch.no_grad():
            return diff.loss(lambda a, b, c: model(a, b, c, backend="reference"), x0, y, w, fixed_t, fixed_n)[0].item()

    before = eval_loss()
    for _ in range(150):
        loss, _ = diff.loss(lambda a, b, c: model(a, b, c, backend="reference"), x0, y, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.8 * before


# -- initialisation and normalisation (issue 15) ------------------------------------------------
def test_graph_conv_init_uses_the_fans_of_each_half():
    """Each W half is Xavier-uniform on its [C_in, C_out] matrix: bound gain * sqrt(6 / (C_in + C_out)),
    not the 3-D tensor's fan_in = C_in * C_out (which started every layer ~8x too small)."""
    from diffupose.layers import ModulatedGraphConv
    from diffupose.skeleton import get_skeleton

    torch.manual_seed(0)
    conv = ModulatedGraphConv(128, 128, get_skeleton("h36m17").adjacency(), "silu")
    bound = 1.414 * (6 / 256) ** 0.5
    for half in conv.W.detach():
        assert half.abs().max() <= bound
        # uniform on [-b, b] has std b / sqrt(3); the old init's std was ~8x smaller
        assert abs(half.std().item() - bound / 3 ** 0.5) < 0.05 * bound


def _randomise_norms(model):
    """Batch-norm statistics and affine parameters far from the identity, so folding is exercised."""
    g = torch.Generator().manual_seed(3)
    for c in model.net.layers():
        if c.norm is not None:
            C = c.c_out
            c.norm.running_mean.copy_(torch.randn(C, generator=g))
            c.norm.running_var.copy_(torch.rand(C, generator=g) * 3 + 0.2)
            c.norm.weight.data.copy_(torch.randn(C, generator=g))
            c.norm.bias.data.copy_(torch.randn(C, generator=g))


def _unfolded_forward(backbone, h, scale_shifts):
    """The backbone in eval mode computed by hand, each batch norm applied as its own step after
    the convolution (the plain definition that folding must reproduce)."""
    from diffupose.ops.mgcn import activation_ref, mgcn_ref

    def conv(c, x, ss=None, res=None):
        pre = mgcn_ref(x, c.W, c.M, c.affinity(), c.bias)
        if c.norm is not None:
            bn = c.norm
            pre = (pre - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        if ss is not None:
            pre = pre * (1 + ss[:, 0, None, :]) + ss[:, 1, None, :]
        out = activation_ref(pre, c.act)
        return out if res is None else out + res

    h = conv(backbone.inp, h)
    for i, (c1, c2) in enumerate(zip(backbone.convs1, backbone.convs2)):
        r = h
        h = conv(c1, h, scale_shifts[i] if scale_shifts is not None else None)
        h = conv(c2, h, res=r)
    return conv(backbone.out, h)


def _chain_of(layers, h, scale_shifts):
    """What a packed sampler does with inference_layers(): the fused op's reference, layer by layer."""
    from diffupose.ops.mgcn import mgcn_ref

    L = layers
    h = mgcn_ref(h, L[0]["W"], L[0]["M"], L[0]["a"], L[0]["bias"], act=L[0]["act"])
    body = L[1:-1]
    for i in range(0, len(body), 2):
        r = h
        ss = scale_shifts[i // 2] if scale_shifts is not None else None
        h = mgcn_ref(h, body[i]["W"], body[i]["M"], body[i]["a"], body[i]["bias"], ss, act=body[i]["act"])
        h = mgcn_ref(h, body[i + 1]["W"], body[i + 1]["M"], body[i + 1]["a"], body[i + 1]["bias"], None, r,
                     act=body[i + 1]["act"])
    return mgcn_ref(h, L[-1]["W"], L[-1]["M"], L[-1]["a"], L[-1]["bias"], act=L[-1]["act"])


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_batch_norm_folded_matches_unfolded_in_eval(backend):
    from diffupose.ops.backend import has_extension

    if backend == "cpu" and not has_extension():
        pytest.skip("the C++ extension is not built")
    dt, tol = torch.float32, (1e-5 if backend == "reference" else 1e-4)
    torch.manual_seed(0)
    model = GCNDenoiser(ModelConfig(d_model=32, n_blocks=2, d_time=16, norm="batch")).to(dt)
    _randomise_norms(model)
    model.eval()
    x, y, t = torch.randn(6, 17, 3, dtype=dt), torch.randn(6, 17, 2, dtype=dt), 7
    with torch.no_grad():
        ss = model.time_conditioning(t, 6, x.device)
        h = torch.cat([x, y], -1)
        expected = _unfolded_forward(model.net, h, ss)
        eps, y_hat = model(x, y, t, backend=backend)
        layers = model.net.inference_layers()
        packed = _chain_of(layers, h, ss)
    got = torch.cat([eps, y_hat], -1)
    assert (expected - h[..., :5]).abs().max() > 1e-3  # the norms do change the output
    assert torch.allclose(got, expected, atol=tol, rtol=tol), (got - expected).abs().max()
    assert torch.allclose(packed, expected, atol=tol, rtol=tol)
    assert len(layers) == 2 + 2 * 2 and {d["act"] for d in layers} == {"silu", "none"}
    # the last layer has no norm: its weights come back as they are
    assert torch.equal(layers[-1]["W"], model.net.out.W.detach())


def test_inference_layers_of_a_model_without_norm_are_its_weights():
    model = GCNDenoiser(ModelConfig(d_model=16, n_blocks=1, d_time=8, norm="none"))
    for c, d in zip(model.net.layers(), model.net.inference_layers()):
        assert torch.equal(d["W"], c.W.detach()) and torch.equal(d["bias"], c.bias.detach())
        assert torch.equal(d["a"], c.affinity().detach())


def test_inference_layers_leave_the_training_mode_alone():
    model = GCNDenoiser(ModelConfig(d_model=16, n_blocks=1, d_time=8, norm="batch"))
    model.train()
    model.net.inference_layers()
    assert all(m.training for m in model.modules())


def test_layer_norm_cannot_be_folded():
    model = GCNDenoiser(ModelConfig(d_model=16, n_blocks=1, d_time=8, norm="layer"))
    with pytest.raises(ValueError, match="layer norm"):
        model.net.inference_layers()


def test_batch_norm_trains_on_batch_statistics():
    """In training mode the norm uses the batch's statistics (and updates the running ones); the
    gradient reaches every parameter, the norm's included."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="regressor", d_model=16, n_blocks=1, norm="batch"))
    before = model.net.inp.norm.running_mean.clone()
    out = model(torch.randn(8, 17, 2), backend="reference")
    out.square().mean().backward()
    assert not torch.equal(model.net.inp.norm.running_mean, before)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if not n.endswith(("P", "Q"))), [n for n, p in model.named_parameters() if p.grad is None]


def test_config_without_norm_reads_as_no_norm():
    """Checkpoints written before the field existed were trained without a normalisation."""
    d = ModelConfig().to_dict()
    del d["norm"]
    assert ModelConfig.from_dict(d).norm == "none"
    assert ModelConfig.from_dict({**d, "norm": "batch"}).norm == "batch"
    with pytest.raises(ValueError, match="norm"):
        ModelConfig(norm="group")


def test_shipped_checkpoints_load():
    from diffupose.checkpoint import (CMU_ONLY_CHECKPOINT, DEFAULT_CHECKPOINT, MLP_CHECKPOINT, checkpoint_paths,
                                     load_checkpoint)

    # written before ModelConfig.norm existed: reads as no norm, as it was trained
    model, _, config = load_checkpoint(CMU_ONLY_CHECKPOINT)
    assert "norm" not in config["model"] and model.cfg.norm == "none"
    assert all(c.norm is None for c in model.net.layers())
    model, _, config = load_checkpoint(DEFAULT_CHECKPOINT)
    assert model.cfg.norm == "batch" and config["dataset"]["name"] == "cmu+hdm05"
    assert len(config["calibration"]["spread_scale"]) == 17 and config["dataset"]["val_fraction"] > 0
    assert checkpoint_paths("cmu_hdm05_mlp") == checkpoint_paths(MLP_CHECKPOINT)  # a shipped one by name
    model, _, config = load_checkpoint(MLP_CHECKPOINT)
    assert model.cfg.arch == "mlp" and config["dataset"]["name"] == "cmu+hdm05"
    assert len(config["calibration"]["spread_scale"]) == 17 and config["dataset"]["val_fraction"] > 0
