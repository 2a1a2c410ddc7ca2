"""The training loop: loss falls, checkpoints load, resume continues exactly, DDP on 2 CPU processes."""
import types

import numpy as np
import pytest
import torch

from diffupose.checkpoint import load_checkpoint
from diffupose.diffusion import DiffusionConfig
from diffupose.model import ModelConfig
from diffupose.skeleton import H36M17
from diffupose.training import TrainConfig, TrainData, Trainer


def fake_poseset(n=96, seed=0):
    rng = np.random.default_rng(seed)
    pose3d = (rng.standard_normal((n, 17, 3)) * 0.2).astype(np.float32)
    pose3d[:, 0] = 0
    pose2d = (pose3d[..., :2] / (3 + pose3d[..., 2:])).astype(np.float32)
    return types.SimpleNamespace(pose3d=pose3d, pose2d=pose2d, skeleton=H36M17)


def make(tmp_path, arch="gcn", **kw):
    cfg = TrainConfig(**{**dict(epochs=2, batch_size=32, lr=1e-3, progress=False, backend="reference"), **kw})
    data = TrainData.from_poseset(fake_poseset(), 0.25, torch.device("cpu"))
    return Trainer(ModelConfig(arch=arch, d_model=16, n_blocks=1, d_time=8), DiffusionConfig(), cfg, data, tmp_path,
                   torch.device("cpu"))


def test_trains_logs_and_exports(tmp_path):
    tr = make(tmp_path)
    tr.run()
    assert tr.epoch == 2 and tr.step == 6
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,step,lr,loss") and len(log) == 3
    model, diffusion, cfg = load_checkpoint(tmp_path / "model")
    assert cfg["training"]["epoch"] == 2
    for k, v in tr.ema_model().state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


@pytest.mark.parametrize("stop_at", [3, 4])  # at an epoch boundary, and mid-epoch
def test_resume_continues_exactly(tmp_path, stop_at):
    full = make(tmp_path / "full", epochs=3)
    full.run()
    part = make(tmp_path / "part", epochs=3, max_steps=stop_at, save_every=1)
    part.run()
    assert part.step == stop_at
    resumed = make(tmp_path / "part", epochs=3)
    assert resumed.resume()
    resumed.run()
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    for k, v in full.ema_model().state_dict().items():
        torch.testing.assert_close(resumed.ema_model().state_dict()[k], v, rtol=0, atol=0, msg=k)
    # the log too: the resumed epoch's row averages all of its batches (the running sums are in
    # the state) and the row of the epoch cut short is replaced, not kept beside the full one
    full_log, resumed_log = _log(tmp_path / "full"), _log(tmp_path / "part")
    assert [r["epoch"] for r in resumed_log] == ["1", "2", "3"]
    assert full_log == resumed_log


def _log(run_dir):
    """log.csv rows without the wall-clock column."""
    import csv

    with open(run_dir / "log.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_resume_after_a_kill_between_log_and_save(tmp_path):
    """A row logged after the last save (the process killed before saving) is not doubled."""
    full = make(tmp_path / "full", epochs=2)
    full.run()
    part = make(tmp_path / "part", epochs=2, max_steps=4, save_every=1)
    part.run()  # stops mid-epoch 2 after step 4 (3 steps per epoch), saved at step 4
    state = (tmp_path / "part" / "train_state.pt").read_bytes()
    with open(tmp_path / "part" / "log.csv", "a") as f:
        f.write("2,6,0.001,9.9,9.9,9.9,1.0\n")  # as if epoch 2 had ended and been logged, then killed
    (tmp_path / "part" / "train_state.pt").write_bytes(state)
    resumed = make(tmp_path / "part", epochs=2)
    assert resumed.resume()
    resumed.run()
    assert _log(tmp_path / "full") == _log(tmp_path / "part")


def test_resume_refuses_another_config(tmp_path):
    make(tmp_path, max_steps=1).run()
    other = Trainer(ModelConfig(d_model=8, n_blocks=1, d_time=8), DiffusionConfig(), TrainConfig(progress=False),
                    TrainData.from_poseset(fake_poseset(), 0.25, torch.device("cpu")), tmp_path, torch.device("cpu"))
    with pytest.raises(ValueError, match="another model"):
        other.resume()


def test_regressor_trains(tmp_path):
    tr = make(tmp_path, arch="regressor", epochs=1)
    tr.run()
    assert tr.step == 3


def test_bad_data_rejected():
    ps = fake_poseset()
    ps.pose2d[3, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TrainData.from_poseset(ps, 0.25, torch.device("cpu"))


def test_ema_warmup_follows_the_raw_weights_early():
    from diffupose.training import ema_warmup_fn

    decay = 0.999
    fn = ema_warmup_fn(decay)
    ema, p = [torch.zeros(3)], [torch.ones(3)]
    fn(ema, p, torch.tensor(1))  # after the first copy: d = 2/11
    assert torch.allclose(ema[0], torch.full((3,), 1 - 2 / 11))
    ema = [torch.zeros(3)]
    fn(ema, p, torch.tensor(100000))  # late: the plain decay
    assert torch.allclose(ema[0], torch.full((3,), 1 - decay))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_compiled_loss_is_one_graph(tmp_path, backend):
    """--compile: the forward and the loss in one graph (the fused ops held whole by their fake
    kernels), compiled once: after two epochs still 1 graph, no break, no recompile."""
    from diffupose.baselines import compile_counts, reset_compiled
    from diffupose.ops import BackendUnavailable, resolve

    try:
        resolve(backend, torch.device("cpu"))
    except BackendUnavailable as e:
        pytest.skip(str(e))
    reset_compiled()
    tr = make(tmp_path, backend=backend, compile=True)
    before = [p.detach().clone() for p in tr.model.parameters()]
    tr.run()
    counts = compile_counts()
    reset_compiled()
    assert tr.step == 6 and counts == {"graphs": 1, "graph_breaks": 0}, counts
    after = list(tr.model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_compile_failure_falls_back_to_eager(tmp_path, monkeypatch, capsys):
    """--compile on a machine where compiling fails: one note, then the eager step; the run finishes."""
    def broken_compile(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("inductor: no working C++ compiler\n(details)")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    tr = make(tmp_path, compile=True)
    tr.run()
    assert tr.step == 6
    err = capsys.readouterr().err
    assert err.count("torch.compile of the training step failed") == 1 and "no working C++ compiler" in err


def test_eager_loss_error_is_not_called_a_compile_failure(tmp_path, monkeypatch, capsys):
    """Without --compile an error in the loss propagates as itself, with no note about torch.compile."""
    tr = make(tmp_path)

    def broken_loss(x0, y):
        raise RuntimeError("model bug")

    monkeypatch.setattr(tr, "loss", broken_loss)
    with pytest.raises(RuntimeError, match="model bug"):
        tr.run()
    assert "torch.compile" not in capsys.readouterr().err



HOLD_HEAP_STEPS = """
import resource, sys, torch
from diffupose.diffusion import Diffusion, DiffusionConfig, joint_weights
from diffupose.model import ModelConfig, build_model
from diffupose.training import adam, hold_heap
assert hold_heap() if sys.argv[1] == "1" else True
torch.manual_seed(0)
model, diffusion = build_model(ModelConfig(d_model=128, n_blocks=3)), Diffusion(DiffusionConfig())
w, opt = joint_weights("extremities", model.skeleton), adam(model.parameters(), 1e-4)
x0, y = torch.randn(256, 17, 3), torch.randn(256, 17, 2) * 0.3
def step():
    loss = diffusion.loss(lambda a, b, c: model(a, b, c, backend="%s"), x0, y, w)[0]
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(3): step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8): step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 8)
"""


def test_hold_heap_keeps_freed_activations_for_the_next_step():
    """training.hold_heap (Trainer.run calls it): the page faults of a training step (d 128, batch
    256) fall from ~1,000-3,800 a step (glibc handed freed activations back to the OS and faulted
    them in again) to below 300 (0-300 measured). Subprocesses: mallopt is process-wide."""
    import os
    import platform
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc only")
    from diffupose import ops
    backend = "cpu" if ops.has_extension() else "reference"
    faults = {held: float(subprocess.run([sys.executable, "-c", HOLD_HEAP_STEPS % backend, held], capture_output=True,
                                         text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
                                         ).stdout.split()[-1]) for held in ("0", "1")}
    assert faults["1"] < 0.5 * faults["0"] and faults["1"] < 600, faults
