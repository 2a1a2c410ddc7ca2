import math

import pytest
import torch

from diffupose.diffusion import (X0_WEIGHT_CAP, Diffusion, DiffusionConfig, check_pose2d, cosine_alpha_bar,
                                 joint_weights, linear_alpha_bar, loss_weights)
from diffupose.model import ModelConfig, build_model
from diffupose.ops import sampler_step
from diffupose.skeleton import H36M17


@pytest.mark.parametrize("abar", [cosine_alpha_bar(100), linear_alpha_bar(100), cosine_alpha_bar(7)])
def test_schedule_identities(abar):
    assert torch.all(abar[1:] < abar[:-1]), "alpha_bar must decrease"
    assert 0 < abar[-1] < 1e-2 and 0.9 < abar[0] < 1
    betas = 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
    assert torch.all((betas > 0) & (betas <= 0.999))


def test_cosine_formula():
    T, s = 100, 0.008
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    abar = cosine_alpha_bar(T, s)
    for t in (0, 10, 50, 90):  # unclipped region
        assert abs(abar[t].item() - f(t + 1) / f(0)) < 1e-12


def test_q_sample_statistics():
    d = Diffusion(DiffusionConfig())
    x0 = torch.full((20000, 1, 3), 0.7)
    for t in (5, 50, 95):
        xt = d.q_sample(x0, torch.full((20000,), t), torch.randn_like(x0))
        ab = d.alpha_bar[t].item()
        assert abs(xt.mean().item() - math.sqrt(ab) * 0.7) < 0.02
        assert abs(xt.var().item() - (1 - ab)) < 0.03


def test_plans():
    d = Diffusion(DiffusionConfig())
    assert d.timesteps(5) == [80, 60, 40, 20, 0] and d.timesteps(2) == [50, 0] and d.timesteps(3) == [67, 33, 0]
    assert d.timesteps(None) == list(range(99, -1, -1)) and len(d.timesteps(20)) == 20
    ddpm = d.plan(ddpm=True)
    ab = d.alpha_bar
    for t, c in ddpm[:-1]:  # DDPM: sigma^2 is the posterior variance
        beta = 1 - ab[t] / ab[t - 1]
        post = (1 - ab[t - 1]) / (1 - ab[t]) * beta
        assert abs(c.sigma ** 2 - post.item()) < 1e-12
    assert ddpm[-1][1].sigma == 0 and ddpm[-1][1].c_x0 == 1.0  # the last step returns x0
    assert all(c.sigma == 0 for _, c in d.plan(10, eta=0.0))


def test_plans_are_cached_per_setting():
    """plan() keeps its results (it runs on every lift): the same call gives equal plans that a
    caller may change freely, a different eta, step count or x0 clip its own."""
    d = Diffusion(DiffusionConfig())
    a = d.plan(5, eta=0.0)
    a.pop()  # the caller's list, not the cache
    assert len(d.plan(5, eta=0.0)) == 5 and d.plan(5, eta=0.0) == d.plan(5, eta=0.0)
    assert d.plan(5, eta=0.5) != d.plan(5, eta=0.0) and len(d.plan(10)) == 10
    d.cfg.clip_x0 = 2.5
    assert all(c.clip == 2.5 for _, c in d.plan(5, eta=0.0))


def _tiny():
    torch.manual_seed(1)
    return build_model(ModelConfig(d_model=16, n_blocks=1, d_time=8)).eval()


def test_ddim_eta0_is_deterministic_for_a_fixed_xT():
    d, model = Diffusion(DiffusionConfig()), _tiny()
    y = torch.randn(2, 17, 2)
    xT = torch.randn(2, 17, 3)

    def run(seed):
        x = xT
        for i, (t, c) in enumerate(d.plan(5, eta=0.0)):
            eps = model(x, y, torch.tensor([t]), backend="reference")[0]
            x = sampler_step(x, eps, torch.tensor([seed, 0]), i * 999, c, backend="reference")[0]
        return x

    with torch.no_grad():
        assert torch.equal(run(1), run(2))


def test_seeded_sampling_is_reproducible_and_fresh():
    d, model = Diffusion(DiffusionConfig()), _tiny()
    y = torch.randn(3, 17, 2)
    with torch.no_grad():
        a = d.sample(model, y, n_hyp=4, steps=5, seed=7, backend="reference")[0]
        b = d.sample(model, y, n_hyp=4, steps=5, seed=7, backend="reference")[0]
        c = d.sample(model, y, n_hyp=4, steps=5, seed=8, backend="reference")[0]
        state = torch.tensor([7, 0])
        first = d.sample(model, y, n_hyp=4, steps=5, rng_state=state, backend="reference")[0]
        second = d.sample(model, y, n_hyp=4, steps=5, rng_state=state, backend="reference")[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(first, a) and not torch.equal(first, second)  # the state advances
    assert not torch.allclose(a[:, 0], a[:, 1])  # hypotheses differ


def test_sampling_shapes_flip_and_ddpm():
    d, model = Diffusion(DiffusionConfig(T=20)), _tiny()
    y = torch.randn(2, 17, 2)
    with torch.no_grad():
        hyp, mean, spread = d.sample(model, y, n_hyp=3, ddpm=True, flip=H36M17, backend="reference")
    assert hyp.shape == (2, 3, 17, 3) and mean.shape == (2, 17, 3) and spread.shape == (2, 17)
    torch.testing.assert_close(mean, hyp.mean(1))
    torch.testing.assert_close(spread, (hyp - mean[:, None]).square().sum(-1).mean(1).sqrt())


def test_joint_weights():
    w = joint_weights("extremities", H36M17)
    assert abs(w.mean().item() - 1) < 1e-6 and w[H36M17.index("r_wrist")] > w[H36M17.index("pelvis")]
    assert torch.equal(joint_weights("uniform", H36M17), torch.ones(17))
    with pytest.raises(ValueError, match="17 positive numbers"):
        joint_weights("1,2,3", H36M17)


@pytest.mark.parametrize("y,match", [
    (torch.zeros(4, 17, 3), r"\[frames, joints, 2\]"),
    (torch.zeros(4, 16, 2), "16 joints, but the model expects 17"),
    (torch.zeros(0, 17, 2), "no frames"),
    (torch.tensor([[[float("nan"), 0.0]] * 17]), "NaN or infinite"),
])
def test_bad_2d_inputs(y, match):
    with pytest.raises(ValueError, match=match):
        check_pose2d(y, 17)


def test_x0_loss_weighting():
    """x0 weighting: sqrt((1 - abar) / abar) capped and normalised to mean 1, rising with t; the loss
    is the eps L1 of each sample times its timestep's weight (eps weighting: the plain L1)."""
    abar = cosine_alpha_bar(100)
    w = loss_weights(abar, "x0")
    raw = ((1 - abar) / abar).sqrt()
    assert w.shape == (100,) and w.mean().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.all(w[1:] >= w[:-1]) and w[-1] / w[0] == pytest.approx(X0_WEIGHT_CAP / raw[0].item(), rel=1e-4)
    assert torch.equal(loss_weights(abar, "eps"), torch.ones(100))
    torch.manual_seed(0)
    x0, y = torch.randn(6, 17, 3), torch.randn(6, 17, 2)
    t, noise = torch.tensor([0, 5, 40, 80, 95, 99]), torch.randn(6, 17, 3)
    eps_hat = torch.randn(6, 17, 3)
    model = lambda a, b, c: (eps_hat, torch.zeros_like(y))  # noqa: E731
    jw = torch.rand(17) + 0.5
    d0, d1 = Diffusion(DiffusionConfig()), Diffusion(DiffusionConfig(loss_weighting="x0", lambda_y=0.0))
    per = ((eps_hat - noise).abs() * jw[:, None]).mean((1, 2))
    assert d1.loss(model, x0, y, jw, t, noise)[1]["l_eps"].item() == pytest.approx((per * w[t]).mean().item(), rel=1e-5)
    assert d0.loss(model, x0, y, jw, t, noise)[1]["l_eps"].item() == pytest.approx(per.mean().item(), rel=1e-5)


def test_bad_configs():
    with pytest.raises(ValueError, match="unknown schedule"):
        DiffusionConfig(schedule="sigmoid")
    with pytest.raises(ValueError, match="loss_weighting"):
        DiffusionConfig(loss_weighting="snr")
    with pytest.raises(ValueError, match="unknown arch"):
        ModelConfig(arch="transformer")
