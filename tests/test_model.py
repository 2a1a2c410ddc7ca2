import pytest
import torch

from diffupose.diffusion import Diffusion, DiffusionConfig, joint_weights
from diffupose.model import ARCHS, GCNDenoiser, ModelConfig, build_model, count_parameters


def gcn_count(J, d, L, dt):
    conv = lambda ci, co: 2 * ci * co + J * co + 2 * J * J + co  # W, M, P, Q, bias  # noqa: E731
    temb = 2 * (dt * dt + dt)
    film = L * (dt * 2 * d + 2 * d)
    return conv(5, d) + 2 * L * conv(d, d) + conv(d, 5) + temb + film


@pytest.mark.parametrize("d,L", [(256, 4), (384, 4), (64, 2)])
def test_gcn_parameter_count(d, L):
    assert count_parameters(GCNDenoiser(ModelConfig(d_model=d, n_blocks=L))) == gcn_count(17, d, L, 128)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("skeleton,J", [("h36m17", 17), ("h36m16", 16), ("humaneva15", 15)])
def test_shapes(arch, skeleton, J):
    m = build_model(ModelConfig(arch=arch, skeleton=skeleton, d_model=32, n_blocks=2, d_time=16))
    y = torch.randn(5, J, 2)
    if arch == "regressor":
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
