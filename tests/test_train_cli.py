"""train/h36m.py end to end on look-alike Human3.6M files, resume refusal, and DDP on 2 CPU processes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffupose.recipes import main
from tests.fakes import fake_h36m

ROOT = Path(__file__).resolve().parent.parent
ALL_SUBJECTS = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")
SMALL = ["--d-model", "16", "--blocks", "1", "--epochs", "1", "--batch-size", "64", "--lr", "1e-3",
         "--backend", "reference", "--no-progress", "--eval-hyp", "1", "3", "--eval-steps", "2"]


def test_train_h36m_lookalike_end_to_end(tmp_path, capsys):
    fake_h36m(tmp_path / "h36m", subjects=ALL_SUBJECTS)
    out = tmp_path / "run"
    assert main(["--data-dir", str(tmp_path / "h36m"), "--out", str(out), *SMALL]) == 0
    text = capsys.readouterr().out
    assert "Protocol #1: MPJPE (mm)" in text and "Protocol #2: P-MPJPE (mm)" in text
    assert "DiffuPose N=1" in text and "DiffuPose N=3 oracle (best of 3)" in text
    for col in ("Walk", "Photo", "SitD.", "Avg"):
        assert col in text
    assert (out / "model.safetensors").exists() and (out / "results.json").exists() and (out / "log.csv").exists()
    # a second run into the same folder must not silently overwrite it
    assert main(["--data-dir", str(tmp_path / "h36m"), "--out", str(out), *SMALL]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path / "h36m"), "--out", str(out), "--resume", *SMALL]) == 0


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path / "nowhere"), *SMALL]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_ddp_two_cpu_processes(tmp_path):
    fake_h36m(tmp_path / "h36m", subjects=ALL_SUBJECTS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           str(ROOT / "train" / "h36m.py"), "--data-dir", str(tmp_path / "h36m"), "--out", str(tmp_path / "ddp"),
           "--max-steps", "3", "--no-eval", "--device", "cpu", *SMALL]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (tmp_path / "ddp" / "model.safetensors").exists()


def test_validation_holdout_is_recorded(tmp_path, capsys):
    import json

    fake_h36m(tmp_path / "h36m", subjects=ALL_SUBJECTS)
    common = ["--data-dir", str(tmp_path / "h36m"), "--max-steps", "1", "--no-eval", *SMALL]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--out", str(tmp_path / "b"), "--val-fraction", "0.2"]) == 0
    full = json.loads((tmp_path / "a" / "model.json").read_text())["dataset"]
    held = json.loads((tmp_path / "b" / "model.json").read_text())["dataset"]
    assert full["val_frames"] == 0 and held["val_fraction"] == 0.2 and held["val_frames"] >= 0.2 * full["train_frames"]
    assert held["train_frames"] + held["val_frames"] == full["train_frames"]
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "c"), "--val-fraction", "0.7"]) == 2
    assert capsys.readouterr().err.startswith("error: validation fraction")
    # whole people instead (recorded by name), and not both ways at once
    assert main([*common, "--out", str(tmp_path / "d"), "--val-subjects", "S8"]) == 0
    people = json.loads((tmp_path / "d" / "model.json").read_text())["dataset"]
    assert people["val_subjects"] == ["S8"] and 0 < people["val_frames"] < full["train_frames"]
    assert people["train_frames"] + people["val_frames"] == full["train_frames"]
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "e"), "--val-subjects", "S8", "--val-fraction", "0.1"]) == 2
    assert "pass one" in capsys.readouterr().err


@pytest.mark.parametrize("flag, want", [([], True), (["--compile"], True), (["--no-compile"], False)])
def test_cpu_training_compiles_by_default(tmp_path, monkeypatch, flag, want):
    """One CPU process compiles its training step unless told not to (the fastest step measured:
    docs/BENCHMARKS.md); the Trainer is handed what the flags and the default say."""
    import diffupose.training as training

    seen = {}
    real_init = training.Trainer.__init__

    def spy(self, mcfg, dcfg, tcfg, *a, **k):
        seen["compile"] = tcfg.compile
        real_init(self, mcfg, dcfg, tcfg, *a, **k)

    monkeypatch.setattr(training.Trainer, "__init__", spy)
    fake_h36m(tmp_path / "h36m", subjects=ALL_SUBJECTS)
    common = ["--data-dir", str(tmp_path / "h36m"), "--max-steps", "1", "--no-eval", "--device", "cpu", *SMALL]
    assert main([*common, "--out", str(tmp_path / "run"), *flag]) == 0
    assert seen["compile"] is want


def test_compile_default_is_off_on_cuda_and_with_ddp():
    import torch

    from diffupose.recipes import compile_by_default

    assert compile_by_default(torch.device("cpu"), distributed=False)
    assert not compile_by_default(torch.device("cpu"), distributed=True)
    assert not compile_by_default(torch.device("cuda"), distributed=False)
