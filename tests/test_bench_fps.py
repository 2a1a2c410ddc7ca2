"""The baselines bench/fps.py measures the fused paths against (diffupose/baselines.py): the
same math as the product's sampler, and a torch.compile capture that is one graph, compiled
once, with no graph break and no recompile."""
import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch.utils.flop_counter import FlopCounterMode

from diffupose.baselines import CompiledDDIM, _plain_eps, compile_counts, denoiser_flops, eager_ddim, reset_compiled
from diffupose.diffusion import Diffusion, DiffusionConfig
from diffupose.model import ModelConfig, build_model
from diffupose.ops import NOISE_COEFS, sampler_step_ref

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, N_HYP = 3, 2


def _model(d_model=16, n_blocks=2):
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=d_model, n_blocks=n_blocks, d_time=8)).eval()
    with torch.no_grad():  # off the initialisation (zero FiLMs, P = 1, Q ~ 0), so every weight matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture
def fresh_dynamo():
    reset_compiled()
    yield
    reset_compiled()


def test_eager_baseline_is_the_samplers_math():
    """eager_ddim from the x_T that Diffusion.sample draws gives Diffusion.sample's results."""
    model, diffusion = _model(), Diffusion(DiffusionConfig())
    y = torch.randn(3, 17, 2) * 0.3
    rng = torch.tensor([7, 0])
    x_T, _, _ = sampler_step_ref(torch.zeros(3 * N_HYP, 17, 3), torch.zeros(3 * N_HYP, 17, 3), rng, 0, NOISE_COEFS)
    with torch.no_grad():
        hyp, mean, spread = diffusion.sample(model, y, N_HYP, STEPS, seed=7, backend="reference")
        b_hyp, b_mean, b_spread = eager_ddim(model, diffusion, N_HYP, STEPS)(y, x_T)
    s = diffusion.cfg.pose_scale
    torch.testing.assert_close(b_hyp, hyp * s)
    torch.testing.assert_close(b_mean, mean * s)
    torch.testing.assert_close(b_spread, spread * s)


def test_compiled_baseline_one_graph_no_recompile(fresh_dynamo):
    model, diffusion = _model(), Diffusion(DiffusionConfig())
    counter = CompileCounterWithBackend("aot_eager")  # dynamo's capture as inductor sees it, no codegen
    sampler = CompiledDDIM(model, diffusion, N_HYP, STEPS, backend=counter)
    y = torch.randn(3, 17, 2) * 0.3
    x_T = torch.randn(3 * N_HYP, 17, 3)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        first = sampler(y, x_T)
        second = sampler(y * 0.5, torch.randn_like(x_T))  # new values, same shapes: no new compile
        eager = eager_ddim(model, diffusion, N_HYP, STEPS)(y, x_T)
    assert counter.frame_count == 1
    assert compile_counts() == {"graphs": 1, "graph_breaks": 0}
    for c, e in zip(first, eager):
        torch.testing.assert_close(c, e)
    assert not torch.equal(second[0], first[0])


def test_counting_sees_the_models_own_loop_break_up(fresh_dynamo):
    """The control: compiling the loop over the model (its cached scale-shifts keyed on the
    Python-int t, their cache checks data pointers) does not come out as one graph, and the
    counters say so. Small (1 block, 2 steps): each of its many graphs is traced separately."""
    model, diffusion = _model(n_blocks=1), Diffusion(DiffusionConfig())
    counter = CompileCounterWithBackend("eager")
    run = torch.compile(eager_ddim(model, diffusion, N_HYP, 2), backend=counter)
    with torch.no_grad():
        run(torch.randn(3, 17, 2), torch.randn(3 * N_HYP, 17, 3))
    assert counter.frame_count > 1 or compile_counts()["graph_breaks"] > 0


@pytest.mark.parametrize("d_model,n_blocks", [(16, 2), (256, 4)])
def test_denoiser_flops_match_the_reference_matmuls(d_model, n_blocks):
    model = _model(d_model, n_blocks)
    sampler = CompiledDDIM(model, Diffusion(DiffusionConfig()), 1, 1, backend="eager")
    B = 4
    with FlopCounterMode(display=False) as fc:
        _plain_eps(sampler.layers, sampler.acts, sampler.scale_shifts[0], torch.randn(B, 17, 3), torch.randn(B, 17, 2))
    assert fc.get_total_flops() == B * denoiser_flops(model)
    if d_model == 256:
        assert 36e6 < denoiser_flops(model) < 38e6  # the ~37 MFLOP per pose per step of the docs


def _load_bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "fps.py"
    spec = importlib.util.spec_from_file_location("bench_fps", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_rows_carry_the_floor_and_contention(tmp_path):
    """bench/fps.py end to end at a tiny size (compile left out: it is the slow part, tested above
    through the same class): every path that runs here has a row with the GEMM floor, the fraction
    of it reached, and the time beside a busy process; the fused-sampler row exactly when this
    Lifter takes fused_sampler."""
    import json

    from diffupose import ops

    fps = _load_bench()
    out = tmp_path / "fps.json"
    fps.main(["--d-model", "16", "--blocks", "1", "--batch", "1", "--hyp", "2", "--repeats", "2", "--warmup", "1",
              "--no-compile", "--contend", "1", "--device", "cpu", "--json", str(out)])
    js = json.loads(out.read_text())
    expected = {"eager"}
    if ops.has_extension():
        expected |= {"fused (per-layer ops)"} | ({"fused sampler"} if fps.LIFTER_TAKES_FUSED_SAMPLER else set())
    assert {r["path"] for r in js["rows"]} == expected
    for r in js["rows"]:
        assert r["floor_ms"] > 0 and r["of_floor"] == pytest.approx(r["floor_ms"] / r["p50_ms"])
        assert r["contended_p50_ms"] > 0 and r["contended_ratio"] == pytest.approx(r["contended_p50_ms"] / r["p50_ms"])
    (cfg,) = js["matmul"]["configs"]
    assert cfg["mm_rows"] == 2 * 17 and cfg["mm_gflops"] > 0 and cfg["mm_gflops_1thread"] > 0
