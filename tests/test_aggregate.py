import numpy as np
import pytest
import torch

from diffupose.aggregate import (aggregate, calibrate_spread, coverage, fit_weak_perspective, person_level,
                                 reprojection_errors, reprojection_weights, spearman, spread)


def _pose(F=4, J=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(F, J, 3, generator=g, dtype=torch.float64) * 0.3
    return x - x[:, :1]  # root-relative


def _project(x, s, t):
    return s[:, None, None] * x[..., :2] + t[:, None, :]


def test_weak_perspective_fit_recovers_scale_and_offset():
    x = _pose()
    s, t = torch.tensor([0.5, 1.0, 2.0, 3.5], dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    y = _project(x, s, t)
    fs, ft = fit_weak_perspective(x[:, None].expand(-1, 3, -1, -1), y)
    assert torch.allclose(fs, s[:, None].expand(-1, 3)) and torch.allclose(ft, t[:, None].expand(-1, 3, -1))
    assert reprojection_errors(x[:, None], y).abs().max() < 1e-12


def test_depth_does_not_change_the_fit():
    x = _pose()
    y = _project(x, torch.ones(4, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64))
    moved = x.clone()
    moved[..., 2] += torch.randn_like(moved[..., 2])
    assert torch.allclose(reprojection_errors(moved[:, None], y), reprojection_errors(x[:, None], y))


def test_reproj_prefers_the_hypotheses_that_agree_with_the_2d():
    """Per joint, a hypothesis whose x, y disagree with the input is down-weighted: the reproj
    aggregate lands nearer the truth than the mean, which averages the wrong ones in."""
    x = _pose(F=50, seed=1)
    y = _project(x, torch.full((50,), 2.0, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64))
    g = torch.Generator().manual_seed(2)
    hyp = x[:, None].repeat(1, 10, 1, 1) + 0.005 * torch.randn(50, 10, 17, 3, generator=g, dtype=torch.float64)
    bad = torch.rand(50, 10, 17, generator=g) < 0.3  # 30% of the joints of the hypotheses are off
    bad[:, :, 0] = False
    hyp = hyp - hyp[:, :, :1]  # hypotheses are root-relative, as the Lifter returns them
    hyp[bad] += 0.3 * torch.randn(int(bad.sum()), 3, generator=g, dtype=torch.float64)
    err = lambda p: (p - x).norm(dim=-1).mean().item()  # noqa: E731
    mean, reproj = aggregate(hyp, y, "mean"), aggregate(hyp, y, "reproj")
    assert err(reproj) < 0.5 * err(mean), (err(reproj), err(mean))
    assert torch.allclose(reproj[:, 0], torch.zeros(50, 3, dtype=torch.float64))  # still root-relative


def test_temperature_limits():
    x = _pose(F=3)
    hyp = x[:, None] + 0.1 * torch.randn(3, 5, 17, 3, dtype=torch.float64)
    y = _project(x, torch.ones(3, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64))
    w = reprojection_weights(hyp, y, temperature=1.0)
    assert torch.allclose(w.sum(1), torch.ones(3, 17, dtype=torch.float64))
    hot = reprojection_weights(hyp, y, temperature=0.0)
    best = reprojection_errors(hyp, y).argmin(1)
    assert torch.equal(hot.argmax(1), best) and torch.equal(hot.sum(1), torch.ones(3, 17, dtype=torch.float64))
    assert torch.allclose(aggregate(hyp, y, "reproj", temperature=1e6), hyp.mean(1), atol=1e-6)


def test_reproj_needs_the_2d_and_names_the_choices():
    hyp = torch.zeros(2, 3, 17, 3)
    with pytest.raises(ValueError, match="2D input"):
        aggregate(hyp, None, "reproj")
    with pytest.raises(ValueError, match="mean, median, reproj"):
        aggregate(hyp, None, "mode")
    with pytest.raises(ValueError, match="do not pair up"):
        aggregate(hyp, torch.zeros(3, 17, 2), "reproj")


def test_spread_is_the_rms_distance_from_the_mean():
    hyp = torch.zeros(1, 2, 17, 3, dtype=torch.float64)
    hyp[0, 0, :, 0], hyp[0, 1, :, 0] = 1.0, -1.0
    assert torch.allclose(spread(hyp), torch.ones(1, 17, dtype=torch.float64))


def test_spearman_and_coverage():
    a = np.arange(100.0)
    assert spearman(a, a ** 3) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    assert coverage([1.0, 2.0, 3.0, 5.0], [1.0, 1.0, 1.0, 1.0]) == 0.5


def test_calibration_reaches_its_coverage_on_fresh_frames():
    """Spreads 3x too small on joints of different scales: per-joint k fitted on one half puts
    ~90% of the other half's errors within 2 k spread, and corrects each joint."""
    rng = np.random.default_rng(0)
    sigma = np.linspace(0.01, 0.2, 17)
    def draw(n):
        return np.abs(rng.normal(size=(n, 17))) * sigma, np.broadcast_to(sigma / 3, (n, 17))
    e_val, s_val = draw(4000)
    e_test, s_test = draw(4000)
    assert coverage(e_test, s_test) < 0.6
    k = calibrate_spread(e_val, s_val, target=0.9)
    assert k.shape == (17,) and np.allclose(k, k[0], rtol=0.15)  # every joint equally overconfident
    assert coverage(e_test, s_test * k) == pytest.approx(0.9, abs=0.02)
    k1 = calibrate_spread(e_val, s_val, per_joint=False)
    assert k1.shape == (1,) and spearman(e_test, s_test * k1) == pytest.approx(spearman(e_test, s_test))


def test_person_level_covers_a_new_person():
    """Three people whose errors outgrow the spread by different factors (1, 1.3, 1.6): scales
    fitted at 90% on some cover less on another, so the level rises above 0.9, is the smallest on
    its grid that reaches 90% across people, and a scale fitted at it on two of them covers ~90% of
    the third's errors on average; equal people keep the level at the target."""
    rng = np.random.default_rng(1)
    sigma = np.linspace(0.02, 0.1, 16)

    def person(n, f):
        return np.abs(rng.normal(size=(n, 16))) * sigma * f, np.broadcast_to(sigma / 2, (n, 16))

    rows = [person(3000, f) for f in (1.0, 1.3, 1.6)]
    e, s = np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])
    who = np.repeat(np.array(["a", "b", "c"]), 3000)
    q, cross = person_level(e, s, who, 0.9)
    assert 0.9 < q < 0.999 and cross >= 0.9
    ratio = e / (2 * s)
    pairs = [(x, y) for x in "abc" for y in "abc" if x != y]
    below = np.mean([np.mean(ratio[who == y] <= np.quantile(ratio[who == x], q - 0.001, axis=0)) for x, y in pairs])
    assert below < 0.9  # the smallest such level
    held = [coverage(e[who == c], s[who == c] * calibrate_spread(e[who != c], s[who != c], q)) for c in "abc"]
    assert np.mean(held) == pytest.approx(0.9, abs=0.03)
    same = np.repeat(np.array(["a", "b"]), 3000)
    e2, s2 = person(6000, 1.0)
    assert person_level(e2, s2, same, 0.9)[0] == pytest.approx(0.9, abs=0.006)
    with pytest.raises(ValueError, match="two held-out people"):
        person_level(e2, s2, np.array(["a"] * 6000))


def test_predict_with_reproj_aggregates_its_own_hypotheses():
    from diffupose.diffusion import Diffusion, DiffusionConfig
    from diffupose.evaluate import predict
    from diffupose.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=16, n_blocks=1, d_time=8))
    diffusion = Diffusion(DiffusionConfig(T=20, pose_scale=0.3))
    y = torch.rand(6, 17, 2) * 2 - 1
    p = predict(model, diffusion, y.numpy(), n_hyp=4, steps=2, aggregate="reproj", backend="reference", flip=False)
    m = predict(model, diffusion, y.numpy(), n_hyp=4, steps=2, aggregate="mean", backend="reference", flip=False)
    assert np.allclose(p.hypotheses, m.hypotheses)  # same draws, only the aggregate differs
    assert np.allclose(p.mean, aggregate(torch.as_tensor(p.hypotheses), y, "reproj").numpy(), atol=1e-5)
    assert not np.allclose(p.mean, m.mean, atol=1e-4)


def test_aggregate_report_rows_and_spread_numbers():
    from diffupose.data.dataset import load_dataset
    from diffupose.diffusion import Diffusion, DiffusionConfig
    from diffupose.evaluate import aggregate_report, subsample
    from diffupose.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=16, n_blocks=1, d_time=8))
    train, test = load_dataset("cmu", None, "det")
    r = aggregate_report(model, Diffusion(DiffusionConfig(T=20, pose_scale=0.3)), subsample(train, 12)[0],
                         subsample(test, 10)[0], n_max=4, ns=(2, 4), steps=2, backend="reference")
    assert [(row["N"], row["aggregate"].split()[0]) for row in r["rows"]] == [
        (n, a) for n in (2, 4) for a in ("mean", "median", "reproj", "reproj")]
    for n in (2, 4):
        sp = r[f"spread_n{n}"]
        assert len(sp["k_per_joint"]) == 16  # the root left out
        assert all(0 <= sp[k] <= 1 for k in ("coverage_raw", "coverage_global", "coverage_per_joint"))
        assert sp["spearman_global"] == pytest.approx(sp["spearman_raw"])
