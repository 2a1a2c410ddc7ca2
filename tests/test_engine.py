import pytest
import torch

from diffupose.diffusion import Diffusion, DiffusionConfig
from diffupose.engine import Lifter
from diffupose.model import ModelConfig, build_model


def _lifter(**kw):
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=16, n_blocks=1, d_time=8))
    return Lifter(model, Diffusion(DiffusionConfig(pose_scale=0.5)), backend="reference", **kw)


def test_shapes_units_and_aggregates():
    lift = _lifter(n_hyp=4, steps=3, batch_frames=3)
    y = torch.randn(7, 17, 2) * 0.3
    r = lift(y)
    assert r.mean.shape == (7, 17, 3) and r.hypotheses.shape == (7, 4, 17, 3) and r.spread.shape == (7, 17)
    torch.testing.assert_close(r.mean, r.hypotheses.mean(1))  # metres, mean of the hypotheses
    torch.testing.assert_close(r.spread, (r.hypotheses - r.mean[:, None]).square().sum(-1).mean(1).sqrt())
    med = _lifter(n_hyp=5, steps=2, aggregate="median")(y)
    torch.testing.assert_close(med.mean, med.hypotheses.median(1).values)


def test_seeded_reproducible_and_fresh():
    lift = _lifter(n_hyp=3, steps=2, seed=5)
    y = torch.randn(4, 17, 2)
    a, b = lift(y), lift(y)
    assert not torch.equal(a.hypotheses, b.hypotheses)  # fresh noise on every call
    lift.reseed(5)
    torch.testing.assert_close(lift(y).hypotheses, a.hypotheses, rtol=0, atol=0)


def test_ddpm_and_flip_run():
    r = _lifter(n_hyp=2, sampler="ddpm", flip=True)(torch.randn(2, 17, 2))
    assert torch.isfinite(r.hypotheses).all()


@pytest.mark.parametrize("y,match", [
    (torch.randn(3, 16, 2), "16 joints, but the model expects 17"),
    (torch.full((2, 17, 2), float("nan")), "NaN"),
    (torch.randn(3, 17), "frames, joints, 2"),
])
def test_bad_inputs(y, match):
    with pytest.raises(ValueError, match=match):
        _lifter()(y)


def test_bad_settings():
    with pytest.raises(ValueError, match="unknown sampler"):
        _lifter(sampler="euler")
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        _lifter(cuda_graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (none on this machine)")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_graph_matches_eager_on_cuda(backend):
    from tests.helpers import skip_unless_backend

    skip_unless_backend(backend)
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=64, n_blocks=2)).cuda()
    diff = Diffusion(DiffusionConfig())
    y = torch.randn(37, 17, 2, device="cuda") * 0.3
    eager = Lifter(model, diff, n_hyp=10, steps=5, batch_frames=16, cuda_graph=False, seed=3, backend=backend)(y)
    graph_lifter = Lifter(model, diff, n_hyp=10, steps=5, batch_frames=16, cuda_graph=True, seed=3, backend=backend)
    g1 = graph_lifter(y)
    torch.testing.assert_close(g1.hypotheses, eager.hypotheses, rtol=1e-4, atol=1e-4)
    g2 = graph_lifter(y)
    assert not torch.allclose(g1.hypotheses, g2.hypotheses)  # fresh noise on every replay
    graph_lifter.reseed(3)
    torch.testing.assert_close(graph_lifter(y).hypotheses, g1.hypotheses, rtol=0, atol=0)
