"""The paper's ablation study (Tables IV-VI) on the embedded CMU set, in one command
(`train/ablations.py` is its command line; the logic lives here, in the package).

    python train/ablations.py                       # the default study: ~1 h on a 2-core CPU
    python train/ablations.py --dry-run             # the planned runs and the time estimate only
    python train/ablations.py --report-only         # rebuild docs/RESULTS.md from results.json
    python train/ablations.py --device cuda --epochs 200 --downsample 1 --seeds 0 1 2 \\
        --widths 128 256 384 --full-test             # the same study at full size, on a GPU

What is trained. A list of runs, each a configuration (denoiser arch, noise schedule, width d_m,
2D keypoint set: `gt` exact or `det` detector-like noise) times a seed. The baseline (gcn,
cosine, d_m 128, gt) is shared by every ablation row; the N-hypotheses and sampler rows are
evaluations of the baseline checkpoints, not new training. Every run is trained by the project's
own training command (diffupose.recipes.main, in-process: the same code as
`python train/h36m.py --dataset cmu ...`, whose exact arguments are recorded per run) into its
own folder under --out. A finished run (its exported checkpoint has all its epochs) is skipped; a
half-finished one continues exactly where it stopped (the trainer's --resume). Evaluations are
cached per run, so an interrupted study resumes where it was.

How it is scored. On an evenly spread subsample of the CMU test split (--test-frames, or
--full-test), with test-time flip. The aggregate of N hypotheses is their mean: nothing that
is reported as a prediction sees the ground truth. The oracle best-of-N, which picks with the
ground truth, is a bound and is reported only under its own name (diffupose.evaluate.ORACLE_ROW).

Output. <out>/results.json: every number with its run's configuration and seed; docs/RESULTS.md
(--report) regenerated from it with a table per ablation row (mean +- std and min-max over seeds,
the paper's figure beside ours where the paper's is known), two plots in docs/img/, the command,
the seeds and the machine. The "Reading" section of an existing report is kept when it is
regenerated: it is where a person writes what the numbers mean.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent  # the checkout: docs/RESULTS.md, git for the report's revision
FORMAT, VERSION = "diffupose-ablations", 1
ROWS = ("denoiser", "schedule", "width", "regressor")
ARCH_LABEL = {"gcn": "modulated GCN (DiffuPose)", "mlp": "MLP", "unet": "U-Net-style MLP",
              "regressor": "GCN regressor (deterministic)"}

# The paper's figures as quoted in the issue that asked for this study (Human3.6M, MPJPE in mm,
# its recipe: diffupose.recipes.PAPER). Only these: where the paper's figure is not known here
# the cell says so; nothing is filled in from memory.
PAPER = {
    ("denoiser", "gcn"): "50.7",
    ("denoiser", "mlp"): "58.1 †",
    ("denoiser", "unet"): "58.1 †",
    ("schedule", "cosine"): "50.7",
    ("schedule", "linear"): "54.9",
}
PAPER_NOTE = ("† The paper compares its GCN (50.7 mm) with a non-graph denoiser (58.1 mm) of a similar size; "
              "the figure is quoted once for both fully connected rows here.")

# The report's sections, in order (the tests check that each is written).
SECTIONS = ("Set-up", "Denoiser (Table IV)", "Noise schedule (Table IV)", "Hypotheses (Table V)",
            "Sampler (Table VI)", "Width", "Diffusion vs the deterministic regressor, clean and noisy 2D",
            "Runs", "Reading")
READING_START, READING_END = "<!-- reading:start -->", "<!-- reading:end -->"
READING_TODO = ("TODO (a person, after a real run): what the tables show, which differences exceed the spread "
                "over seeds, where the CMU results agree or disagree with the paper's direction, and why.")
DEFAULT_REPORT = ROOT / "docs" / "RESULTS.md"
PLOT_HYP, PLOT_SAMPLER = "ablation_hypotheses.png", "ablation_sampler.png"

# The default study is sized for about an hour on this project's 2-core CPU: a training step of
# the d_m 128 GCN at batch 256 took ~125 ms there (d_m 256: ~320 ms; MLP / U-Net ~11 ms). At
# --downsample 4 an epoch is 41 steps, so 30 epochs is ~1,230 steps, ~2.6 min per GCN run; 16 runs
# (2 seeds) train in ~40 min and the evaluations on 1,000 test frames take ~10 min more. With
# another job on the cores, --threads 1 measured ~195 / 535 ms (d_m 128 / 256): ~70 min in all.
DEFAULTS = dict(epochs=30, downsample=4, batch_size=256, d_model=128, blocks=3, widths=[128, 256], seeds=[0, 1],
                keypoints=["gt", "det"], rows=list(ROWS), test_frames=1000, eval_steps=5,
                hypotheses=[1, 5, 10, 20], sampler_steps=[2, 5, 10, 20], timesteps=100, max_steps=0)
# --smoke: the whole pipeline in seconds (tests): two tiny runs, a few steps, 32 test frames.
SMOKE = dict(epochs=1, downsample=40, batch_size=64, d_model=16, blocks=1, widths=[16], seeds=[0], keypoints=["gt"],
             rows=["regressor"], test_frames=32, eval_steps=2, hypotheses=[1, 3], sampler_steps=[2, 5],
             timesteps=100, max_steps=2)


class StudyError(RuntimeError):
    """A problem the user can fix (bad option, a run folder of another study, a failed run)."""


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    arch: str
    schedule: str
    d_model: int
    keypoints: str
    seed: int

    @property
    def config_name(self) -> str:
        return f"{self.arch}-{self.schedule}-d{self.d_model}-{self.keypoints}"

    @property
    def name(self) -> str:
        return f"{self.config_name}-s{self.seed}"

    def config(self) -> dict:
        return {"arch": self.arch, "schedule": self.schedule, "d_model": self.d_model, "keypoints": self.keypoints}


@dataclass
class Study:
    epochs: int
    downsample: int
    batch_size: int
    d_model: int
    blocks: int
    widths: list
    seeds: list
    keypoints: list
    rows: list
    test_frames: Optional[int]
    eval_steps: int
    hypotheses: list
    sampler_steps: list
    timesteps: int
    max_steps: int
    det_everywhere: bool = False
    lr: Optional[float] = None
    lr_decay: Optional[float] = None
    device: str = "cpu"
    backend: Optional[str] = None
    out: str = "runs/ablations"
    smoke: bool = False

    def training_key(self) -> dict:
        """What a run folder's training depends on besides its own configuration."""
        return {k: getattr(self, k) for k in ("epochs", "downsample", "batch_size", "blocks", "timesteps",
                                              "max_steps", "lr", "lr_decay")}

    # -- which runs ------------------------------------------------------------------------
    def baseline(self, keypoints: str, seed: int) -> Run:
        return Run("gcn", "cosine", self.d_model, keypoints, seed)

    def is_baseline(self, run: Run) -> bool:
        return run.arch == "gcn" and run.schedule == "cosine" and run.d_model == self.d_model

    def runs(self) -> list[Run]:
        """Seed-major, so that an interrupted study has whole tables for its first seeds."""
        out: list[Run] = []
        for seed in self.seeds:
            kps = ["gt", "det"] if self.det_everywhere else ["gt"]
            want = [self.baseline("gt", seed)]
            for kp in kps:
                want.append(self.baseline(kp, seed))
                if "denoiser" in self.rows:
                    want += [Run(a, "cosine", self.d_model, kp, seed) for a in ("mlp", "unet")]
                if "schedule" in self.rows:
                    want.append(Run("gcn", "linear", self.d_model, kp, seed))
                if "width" in self.rows:
                    want += [Run("gcn", "cosine", w, kp, seed) for w in self.widths]
            if "regressor" in self.rows:
                for kp in self.keypoints:
                    want += [self.baseline(kp, seed), Run("regressor", "cosine", self.d_model, kp, seed)]
            out += [r for r in dict.fromkeys(want) if r not in out]
        return out

    def evals(self, run: Run) -> list[tuple]:
        """The evaluations of a run: (n_hyp, steps, sampler). The regressor has one (it is
        deterministic); every diffusion run N = 1 at --eval-steps DDIM steps; the baseline also
        the N sweep, and on exact 2D the sampler sweep."""
        if run.arch == "regressor":
            return [(1, 0, "regressor")]
        keys = [(1, self.eval_steps, "ddim")]
        if self.is_baseline(run):
            keys += [(n, self.eval_steps, "ddim") for n in self.hypotheses]
            if run.keypoints == "gt":
                keys += [(1, s, "ddim") for s in self.sampler_steps if s < self.timesteps]
                keys.append((1, self.timesteps, "ddpm"))
        return list(dict.fromkeys(keys))

    def train_argv(self, run: Run, out_dir: Path) -> list[str]:
        """The run's arguments to diffupose.recipes.main (= `python train/h36m.py ...`)."""
        a = ["--dataset", "cmu", "--keypoints", run.keypoints, "--downsample", str(self.downsample),
             "--arch", run.arch, "--d-model", str(run.d_model), "--blocks", str(self.blocks),
             "--schedule", run.schedule, "--timesteps", str(self.timesteps), "--epochs", str(self.epochs),
             "--batch-size", str(self.batch_size), "--seed", str(run.seed), "--device", self.device,
             "--out", str(out_dir), "--no-eval"]
        if self.lr is not None:
            a += ["--lr", repr(self.lr)]
        if self.lr_decay is not None:
            a += ["--lr-decay", repr(self.lr_decay)]
        if self.backend is not None:
            a += ["--backend", self.backend]
        if self.max_steps:
            a += ["--max-steps", str(self.max_steps)]
        return a


def eval_key(n: int, steps: int, sampler: str) -> str:
    return "n1-regressor" if sampler == "regressor" else f"n{n}-{sampler}{steps}"


# ---------------------------------------------------------------------------------------------
# run folders: state, training, evaluation
# ---------------------------------------------------------------------------------------------
def run_dir(study: Study, run: Run) -> Path:
    return Path(study.out) / run.name


def checkpoint_progress(d: Path) -> Optional[dict]:
    """The exported checkpoint's {"epoch", "step"}, or None where there is none yet."""
    from diffupose.checkpoint import CheckpointError, read_config

    try:
        return read_config(d / "model").get("training", {})
    except CheckpointError:
        return None


def is_finished(study: Study, d: Path) -> bool:
    prog = checkpoint_progress(d)
    if not prog:
        return False
    if study.max_steps and prog.get("step", 0) >= study.max_steps:
        return True
    return prog.get("epoch", 0) >= study.epochs


def check_folder(study: Study, run: Run, d: Path) -> None:
    """A run folder must hold this study's run, not one trained with other settings."""
    meta = d / "ablation_run.json"
    if not meta.is_file():
        return
    try:
        old = json.loads(meta.read_text())
    except json.JSONDecodeError as e:
        raise StudyError(f"{meta} is not valid JSON ({e}); delete it to adopt the run as it is") from None
    want = {"run": asdict(run), "training": study.training_key()}
    got = {"run": old.get("run"), "training": old.get("training")}
    if got != want:
        old_t, new_t = got["training"] or {}, want["training"]
        diff = ", ".join(f"{k} {old_t.get(k)!r} (asked: {new_t[k]!r})" for k in new_t if old_t.get(k) != new_t[k])
        raise StudyError(f"{d} holds a run trained with other settings ({diff or got['run']}): pass another "
                         "--out, or delete the folder to retrain it")


def train_run(study: Study, run: Run, verbose: bool) -> None:
    """Train (or continue) one run with diffupose.recipes.main in this process. Its output goes to
    <run>/train.log unless verbose."""
    from diffupose.recipes import main as train_main

    d = run_dir(study, run)
    d.mkdir(parents=True, exist_ok=True)
    argv = study.train_argv(run, d)
    if (d / "train_state.pt").exists():
        argv.append("--resume")
    (d / "ablation_run.json").write_text(json.dumps(
        {"run": asdict(run), "training": study.training_key(),
         "command": "python train/h36m.py " + shlex.join(a for a in argv if a != "--resume")}, indent=1) + "\n")
    if verbose:
        rc = train_main(argv)
    else:
        argv.append("--no-progress")
        with open(d / "train.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            print(f"$ python train/h36m.py {shlex.join(argv)}", flush=True)
            try:
                rc = train_main(argv)
            except Exception as e:  # the log keeps the traceback; the study names the run
                import traceback

                traceback.print_exc()
                rc = f"{type(e).__name__}: {e}"
    if rc != 0:
        tail = "" if verbose else "\n  " + "\n  ".join((d / "train.log").read_text().strip().splitlines()[-5:])
        raise StudyError(f"training {run.name} failed ({rc if isinstance(rc, str) else f'exit {rc}'}); "
                         f"log: {d / 'train.log'}{tail}")
    if not is_finished(study, d):
        raise StudyError(f"training {run.name} stopped before its last epoch (checkpoint: "
                         f"{checkpoint_progress(d)}); rerun to continue it")


def log_summary(d: Path) -> dict:
    """Training wall time (summed over the epochs of log.csv, so a resumed run counts each epoch
    once) and the last epoch's mean loss."""
    path = d / "log.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    seconds = sum(float(r.get("seconds") or 0) for r in rows)
    return {"train_seconds": round(seconds, 2), "final_loss": float(rows[-1]["loss"]), "epochs_logged": len(rows)}


class TestSets:
    """The test split of each keypoint set, subsampled once (the same frames for every run)."""

    def __init__(self, study: Study):
        self.study, self._cache = study, {}

    def get(self, keypoints: str):
        if keypoints not in self._cache:
            from diffupose.data.dataset import load_dataset
            from diffupose.evaluate import subsample

            train, test = load_dataset("cmu", keypoints=keypoints)
            small, idx = subsample(test, self.study.test_frames)
            self._cache[keypoints] = (train, small, idx, len(test))
        return self._cache[keypoints]


def evaluate_run(study: Study, run: Run, tests: TestSets, on_eval=None) -> dict:
    """Every evaluation of a run, cached in <run>/ablation_eval.json (reused while the checkpoint
    and the test frames are the same)."""
    from diffupose.checkpoint import load_checkpoint
    from diffupose.evaluate import evaluate_model, predict
    from diffupose.model import count_parameters

    d = run_dir(study, run)
    _, test, _, full = tests.get(run.keypoints)
    ident = {"checkpoint": checkpoint_progress(d), "keypoints": run.keypoints, "frames": len(test),
             "of_frames": full, "flip": True}
    cache_path = d / "ablation_eval.json"
    cache = {}
    if cache_path.is_file():
        try:
            old = json.loads(cache_path.read_text())
            cache = old["evals"] if old.get("ident") == ident else {}
        except (json.JSONDecodeError, KeyError, TypeError):
            cache = {}
    device = torch.device(study.device)
    model, diffusion, _ = load_checkpoint(d / "model", device)
    warm = False
    for n, steps, sampler in study.evals(run):
        key = eval_key(n, steps, sampler)
        if key in cache:
            continue
        if not warm:  # inference caches and kernels warm before anything is timed
            predict(model, diffusion, test.pose2d[:16], n_hyp=1, steps=2, backend=study.backend, device=device)
            warm = True
        evs = evaluate_model(model, diffusion, test, hypotheses=(n,), steps=max(steps, 1),
                             sampler="ddim" if sampler == "regressor" else sampler, seed=run.seed,
                             oracle=n > 1, backend=study.backend, device=device)
        ev = evs[n]
        rec = {"n_hyp": n, "steps": steps, "sampler": sampler, "mpjpe": ev.mpjpe["Avg"],
               "p_mpjpe": ev.p_mpjpe["Avg"], "fps": ev.extra["fps"], "seconds": ev.extra["seconds"],
               "frames": len(test)}
        if ev.oracle_mpjpe is not None:  # chosen with the ground truth: a bound, kept apart
            rec["oracle_mpjpe"] = ev.oracle_mpjpe["Avg"]
            rec["oracle_p_mpjpe"] = ev.oracle_p_mpjpe["Avg"]
        cache[key] = rec
        _atomic_json(cache_path, {"ident": ident, "evals": cache})
        if on_eval:
            on_eval(key, rec)
    return {"params": count_parameters(model), "evals": {eval_key(*k): cache[eval_key(*k)] for k in study.evals(run)}}


# ---------------------------------------------------------------------------------------------
# timing and the estimate
# ---------------------------------------------------------------------------------------------
def measure(study: Study, archs: Sequence[tuple[str, int]], train, quick: bool) -> dict:
    """Seconds per training step (the Trainer's own train_step, at the study's batch size) and
    per denoiser sample-forward without grad (what sampling costs), for each (arch, d_model)."""
    from diffupose.diffusion import DiffusionConfig
    from diffupose.model import ModelConfig
    from diffupose.recipes import pose_scale_of
    from diffupose.training import TrainConfig, TrainData, Trainer

    device = torch.device(study.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    B = study.batch_size
    sub = train.subset(np.arange(min(len(train), 2 * B)))
    out = {}
    warm, reps = (1, 3) if quick else (3, 7)
    for arch, d in archs:
        mcfg = ModelConfig(arch=arch, skeleton=train.skeleton.name, d_model=d, n_blocks=study.blocks)
        dcfg = DiffusionConfig(T=study.timesteps, pose_scale=pose_scale_of(train.pose3d))
        tcfg = TrainConfig(batch_size=B, lr=1e-4, progress=False, backend=study.backend)
        with tempfile.TemporaryDirectory() as tmp:  # the trainer writes nothing until it saves
            tr = Trainer(mcfg, dcfg, tcfg, TrainData.from_poseset(sub, dcfg.pose_scale, device), Path(tmp), device)
            idx = torch.arange(B, device=device) % len(sub)
            for _ in range(warm):
                tr.train_step(idx)
            times = []
            for _ in range(reps):  # the median: one slow step on a shared machine does not skew it
                sync()
                t0 = time.perf_counter()
                tr.train_step(idx)
                sync()
                times.append(time.perf_counter() - t0)
            step = float(np.median(times))
            model = tr.model.eval()
            M = 4 * B
            x, y = tr.data.x0[idx].repeat(4, 1, 1), tr.data.y[idx].repeat(4, 1, 1)

            def fwd():
                if arch == "regressor":
                    return model(y, backend=study.backend)
                return model(x, y, study.timesteps // 2, backend=study.backend)

            with torch.no_grad():
                fwd()
                times = []
                for _ in range(reps):
                    sync()
                    t0 = time.perf_counter()
                    fwd()
                    sync()
                    times.append(time.perf_counter() - t0)
            out[f"{arch}-d{d}"] = {"step_s": step, "forward_s_per_sample": float(np.median(times)) / M}
    return out


def train_rows(study: Study, train_len: int) -> int:
    rows = len(range(0, train_len, study.downsample))
    total = study.epochs * max(1, rows // study.batch_size)
    return min(total, study.max_steps) if study.max_steps else total


def estimate(study: Study, run: Run, timing: dict, total_steps: int, test_frames: int,
             done_steps: int, cached: set) -> tuple[float, float]:
    """(training seconds, evaluation seconds) still to spend on a run."""
    t = timing[f"{run.arch}-d{run.d_model}"]
    train_s = max(0, total_steps - done_steps) * t["step_s"]
    samples = 0
    for n, steps, sampler in study.evals(run):
        if eval_key(n, steps, sampler) in cached:
            continue
        # flip test: every sample is denoised twice; the regressor is one pass
        samples += test_frames * 2 * (1 if sampler == "regressor" else n * steps)
    return train_s, samples * t["forward_s_per_sample"]


def _threads(n, word: str = "thread") -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def fmt_duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


# ---------------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------------
def machine_info(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "device": device}
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        if rev.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            info["commit"] = rev.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    return info


def run_study(study: Study, args) -> dict:
    from diffupose.data.dataset import load_dataset

    out = Path(study.out)
    runs = study.runs()
    train, _ = load_dataset("cmu")
    total_steps = train_rows(study, len(train))
    tests = TestSets(study)
    test_frames = len(tests.get("gt")[1])

    # -- where each run stands ----------------------------------------------------------------
    state = {}
    for r in runs:
        d = run_dir(study, r)
        check_folder(study, r, d)
        prog = checkpoint_progress(d) or {}
        cached = set()
        with contextlib.suppress(OSError, json.JSONDecodeError, KeyError, TypeError):
            cached = set(json.loads((d / "ablation_eval.json").read_text())["evals"])
        state[r] = {"finished": is_finished(study, d), "step": prog.get("step", 0) if (d / "train_state.pt").exists()
                    else 0, "cached": cached}

    # -- timing and the estimate -----------------------------------------------------------
    todo = [r for r in runs if not state[r]["finished"] or
            any(eval_key(*k) not in state[r]["cached"] for k in study.evals(r))]
    need = sorted({(r.arch, r.d_model) for r in todo}, key=lambda a: (a[1], a[0]))
    timing = {}
    if need:
        print(f"measuring a training step of {', '.join(f'{a} d{d}' for a, d in need)} "
              f"(batch {study.batch_size}, {study.device}, {_threads(torch.get_num_threads())}) ...", flush=True)
        timing = measure(study, need, train, quick=study.smoke)
        print("  " + ", ".join(f"{k}: {v['step_s'] * 1e3:.0f} ms/step" for k, v in timing.items()))
    est = {}
    for r in runs:
        done = total_steps if state[r]["finished"] else state[r]["step"]
        est[r] = estimate(study, r, timing, total_steps, test_frames, done, state[r]["cached"]) if r in todo \
            else (0.0, 0.0)
    rows_of = _roles(study, runs)
    print(f"\nplanned runs ({len(runs)}; {total_steps} steps each = {study.epochs} epochs of "
          f"{len(range(0, len(train), study.downsample))} frames / batch {study.batch_size}"
          f"{f', capped at {study.max_steps}' if study.max_steps else ''}; evaluated on {test_frames} test frames):")
    width = max(len(r.name) for r in runs)
    for i, r in enumerate(runs, 1):
        tr_s, ev_s = est[r]
        status = "finished" if state[r]["finished"] else (f"resume at step {state[r]['step']}" if state[r]["step"]
                                                          else "to train")
        print(f"  {i:>2}. {r.name:<{width}}  {', '.join(rows_of[r]):<34} {status:<22} "
              f"~{fmt_duration(tr_s)} train + ~{fmt_duration(ev_s)} eval")
    tr_total, ev_total = sum(e[0] for e in est.values()), sum(e[1] for e in est.values())
    print(f"estimated time: ~{fmt_duration(tr_total + ev_total)} (training ~{fmt_duration(tr_total)}, evaluation "
          f"~{fmt_duration(ev_total)}) on this machine\n", flush=True)
    if args.dry_run:
        return {}

    # -- train and evaluate, one line per run ------------------------------------------------
    out.mkdir(parents=True, exist_ok=True)
    command = "python train/ablations.py " + shlex.join(args.argv)
    t_start = time.time()
    results = _results_head(study, command, timing, est, tests)
    spent, planned = 0.0, 0.0
    for i, r in enumerate(runs, 1):
        d = run_dir(study, r)
        t0 = time.time()
        print(f"[{i:>2}/{len(runs)}] {r.name:<{width}}", end="", flush=True)
        if state[r]["finished"]:
            print(" trained (skip)", end="", flush=True)
        else:
            what = "resume" if state[r]["step"] else "train"
            print(f" {what} ~{fmt_duration(est[r][0])} ...", end="" if not args.verbose else "\n", flush=True)
            train_run(study, r, args.verbose)
            info = log_summary(d)
            print(f" {fmt_duration(time.time() - t0)}, loss {info.get('final_loss', float('nan')):.4f}", end="",
                  flush=True)
        t1 = time.time()
        evaluated = []

        def on_eval(key, rec):
            print(f"{'' if evaluated else ' | eval'} {key}", end="", flush=True)
            evaluated.append(key)

        ev = evaluate_run(study, r, tests, on_eval=on_eval)
        main_rec = ev["evals"][eval_key(*study.evals(r)[0])]
        spent += time.time() - t0
        planned += sum(est[r])
        # the estimate of what is left, corrected by how the estimate has fared so far
        left = sum(sum(est[q]) for q in runs[i:]) * (spent / planned if planned > 1 else 1.0)
        print(f"{f' ({fmt_duration(time.time() - t1)})' if evaluated else ''} | MPJPE {main_rec['mpjpe']:.1f} mm"
              f"{f' | left ~{fmt_duration(left)}' if i < len(runs) and left > 0 else ''}", flush=True)
        meta = d / "ablation_run.json"
        results["runs"].append({"name": r.name, "config": r.config(), "seed": r.seed, "dir": str(d),
                                "train_command": json.loads(meta.read_text())["command"] if meta.is_file() else None,
                                "roles": rows_of[r], "params": ev["params"], "checkpoint": checkpoint_progress(d),
                                **log_summary(d), "evals": ev["evals"]})
        results["timing"]["wall_s"] = round(time.time() - t_start, 1)
        _atomic_json(out / "results.json", results)
    print(f"\nresults: {out / 'results.json'}")
    return results


def _roles(study: Study, runs: Sequence[Run]) -> dict:
    roles = {}
    for r in runs:
        x = []
        if study.is_baseline(r):
            x.append("baseline")
            if len(study.evals(r)) > 1:
                x.append("N" if r.keypoints != "gt" else "N, sampler")
        if r.arch in ("mlp", "unet"):
            x.append("denoiser")
        if r.schedule == "linear":
            x.append("schedule")
        if r.arch == "gcn" and r.schedule == "cosine" and r.d_model != study.d_model:
            x.append("width")
        if r.arch == "regressor":
            x.append("regressor")
        roles[r] = x
    return roles


def _results_head(study: Study, command: str, timing: dict, est: dict, tests: TestSets) -> dict:
    """Everything in results.json but the runs and the wall time."""
    from diffupose import ops
    from diffupose.evaluate import evaluate_mean_pose

    train, test, _, full = tests.get("gt")
    mp = evaluate_mean_pose(train, test)  # a constant prediction: the floor any model must beat
    measured = {}
    with contextlib.suppress(OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        # a resumed study keeps the step times measured by the invocations before it
        measured = dict(json.loads((Path(study.out) / "results.json").read_text())["timing"]["measured"])
    return {
        "format": FORMAT, "version": VERSION,
        "command": command,
        "study": asdict(study),
        "machine": {**machine_info(study.device), "backend": ops.resolve(study.backend, torch.device(study.device))},
        "timing": {"measured": {**measured, **timing}, "estimate_s": round(sum(sum(e) for e in est.values()), 1)},
        "test": {"split": "cmu test", "frames": len(test), "of_frames": full, "flip": True,
                 "subsample": "diffupose.evaluate.subsample (evenly spread rows)"},
        "notes": {"mpjpe": "mm, protocol #1, mean over actions; the aggregate of N hypotheses is their mean",
                  "oracle_mpjpe": "oracle best-of-N (uses ground truth; not a prediction)",
                  "fps": "test frames / wall time of lifting them (model and sampler only)",
                  "train_seconds": "summed over the epochs in the run's log.csv"},
        "mean_pose": {"mpjpe": mp.mpjpe["Avg"], "p_mpjpe": mp.p_mpjpe["Avg"]},
        "runs": [],
    }


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------
def _stats(values: Sequence[float]) -> Optional[dict]:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return None
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return {"mean": mean, "std": std, "min": min(v), "max": max(v), "n": len(v)}


def _cell(values: Sequence[float], digits: int = 1, spread: bool = True) -> str:
    """'48.3 ± 1.2 (47.4–49.1)': mean ± sample std (min–max) over seeds; one seed: the value."""
    s = _stats(values)
    if s is None:
        return "—"
    f = f"{{:,.{digits}f}}"
    if s["n"] == 1:
        return f.format(s["mean"]) + " (1 seed)"
    text = f.format(s["mean"]) + " ± " + f.format(s["std"])
    return text + (f" ({f.format(s['min'])}–{f.format(s['max'])})" if spread else "")


class Report:
    def __init__(self, results: dict):
        self.res = results
        self.study = results.get("study", {})
        self.runs = results.get("runs", [])

    def find(self, **config) -> list[dict]:
        return [r for r in self.runs if all(r["config"].get(k) == v for k, v in config.items())]

    def values(self, runs: list[dict], key: str, metric: str) -> list:
        return [r["evals"][key].get(metric) for r in runs if key in r.get("evals", {})]

    def main_key(self, arch: str) -> str:
        return "n1-regressor" if arch == "regressor" else f"n1-ddim{self.study.get('eval_steps', 5)}"

    def params(self, runs) -> str:
        p = sorted({r["params"] for r in runs})
        return f"{p[0] / 1e3:,.0f}k" if p else "—"

    def row(self, label: str, runs: list[dict], key: str, paper: Optional[str] = None,
            extra: Sequence[str] = ()) -> list[str]:
        """label, extra..., parameters, MPJPE (mean ± std (min–max)), P-MPJPE (mean ± std), and the
        paper's figure where the table has that column (paper not None)."""
        cells = [label, *extra, self.params(runs), _cell(self.values(runs, key, "mpjpe")),
                 _cell(self.values(runs, key, "p_mpjpe"), spread=False)]
        return cells + ([paper] if paper is not None else [])

    @property
    def d_model(self):
        return self.study.get("d_model", 128)

    def kp_list(self) -> list[str]:
        return list(dict.fromkeys(r["config"]["keypoints"] for r in self.runs)) or ["gt"]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Optional[str] = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


NOT_RUN = "_Not run in this study (no matching runs in results.json)._"


def build_report(results: dict, old_text: str = "") -> str:
    """The report's markdown; old_text: the report it replaces (its Reading section is kept)."""
    from diffupose.evaluate import ORACLE_ROW
    from diffupose.recipes import recipe_for

    cmu = recipe_for("cmu")
    rp = Report(results)
    st, m, tm = rp.study, results.get("machine", {}), results.get("timing", {})
    eval_steps = st.get("eval_steps", 5)
    empty = not rp.runs
    parts = ["# Ablation study on the embedded CMU set",
             "",
             "Generated by `train/ablations.py` from `results.json` (rebuild with `python train/ablations.py "
             "--report-only`); edit only the Reading section, which is kept when the report is regenerated. "
             "MPJPE and P-MPJPE in mm on the CMU test split (`diffupose/assets/cmu`): mean over actions, "
             "test-time flip. Each cell is the mean ± sample standard deviation over seeds (min–max in "
             "parentheses). The aggregate of N hypotheses is their mean, chosen without the ground truth; the "
             "oracle best-of-N uses the ground truth to choose and is reported only under that name.",
             "",
             "The paper's figures are on Human3.6M (d_m 256, 200 epochs): other people, other joints (see the CMU "
             "README's caveats), so compare the direction and size of the differences, not the millimetres.",
             ""]
    if empty:
        parts += ["> **No results yet.** This is the template; run `python train/ablations.py` to fill it: by default "
                  "16 runs (8 configurations x 2 seeds), about an hour on a 2-core CPU; `--dry-run` prints the plan "
                  "and the time estimate for this machine, `--help` the flags that scale the study up.", ""]
    not_run = "_No results yet._" if empty else NOT_RUN

    # -- set-up --------------------------------------------------------------------------------
    parts += ["## Set-up", ""]
    if empty:
        parts += ["_Filled in by the script: the exact command, seeds, machine, training schedule, evaluation "
                  "settings, measured step times and wall time._", ""]
    else:
        test = results.get("test", {})
        steps = sorted({(r.get("checkpoint") or {}).get("step") for r in rp.runs} - {None})
        parts += ["```", results.get("command", "?"), "```", "",
                  f"- **Seeds:** {', '.join(map(str, st.get('seeds', [])))} (training seed = sampling seed of "
                  "the evaluation).",
                  f"- **Machine:** {m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores, "
                  f"{_threads(m.get('torch_threads', '?'), 'torch thread')}"
                  f"{', GPU ' + m['gpu'] if m.get('gpu') else ''}; device `{m.get('device', '?')}`, "
                  f"op backend `{m.get('backend', '?')}`; torch {m.get('torch', '?')}, Python {m.get('python', '?')}"
                  f"{', commit ' + m['commit'] if m.get('commit') else ''}.",
                  f"- **Training (every run):** `diffupose.recipes` on the CMU train split ("
                  + ("every frame" if st.get("downsample", 1) == 1 else f"one frame in {st.get('downsample')}")
                  + f"), {st.get('epochs')} epochs at batch {st.get('batch_size')} "
                  f"({', '.join(map(str, steps))} steps{'; capped by --max-steps' if st.get('max_steps') else ''}), "
                  f"{st.get('blocks')} blocks, T = {st.get('timesteps')}, Adam at lr {st.get('lr') or cmu['lr']:g} "
                  f"x {st.get('lr_decay') or cmu['lr_decay']:g} per epoch, flip augmentation; the EMA weights are "
                  "evaluated. Each run's exact `train/h36m.py` command is in results.json (`train_command`).",
                  f"- **Evaluation:** {test.get('frames', 0):,} of the {test.get('of_frames', 0):,} test rows "
                  f"(evenly spread), DDIM {eval_steps} steps and N = 1 unless a table says otherwise; frames/s is "
                  "the lifting wall time on this machine (model and sampler, batched; shared CPUs make it noisy).",
                  "- **Time:** a training step took "
                  + ", ".join(f"{k} {v['step_s'] * 1e3:.0f} ms" for k, v in tm.get("measured", {}).items())
                  + f" (measured before training); training summed over the runs "
                  f"{fmt_duration(sum(r.get('train_seconds', 0) for r in rp.runs))}, lifting in the evaluations "
                  f"{fmt_duration(sum(e.get('seconds', 0) for r in rp.runs for e in r['evals'].values()))}; the last "
                  f"invocation took {fmt_duration(tm.get('wall_s', 0))} against an estimate of "
                  f"{fmt_duration(tm.get('estimate_s', 0))} (finished runs and evaluations are not redone on a "
                  "rerun).",
                  f"- **Reference:** the training set's mean pose (no input at all) scores "
                  f"{results['mean_pose']['mpjpe']:.1f} mm MPJPE, {results['mean_pose']['p_mpjpe']:.1f} mm P-MPJPE.",
                  ""]

    # -- denoiser ------------------------------------------------------------------------------
    parts += ["## Denoiser (Table IV)", "",
              f"Modulated GCN vs fully connected denoisers of a similar parameter count (their width is matched to "
              f"the GCN's count by `diffupose.model.matched_width`); d_m {rp.d_model}, cosine schedule.", ""]
    rows = []
    for kp in rp.kp_list():
        if not (rp.find(arch="mlp", keypoints=kp) or rp.find(arch="unet", keypoints=kp)):
            continue  # a baseline without its comparison is not a row of this table
        for arch in ("gcn", "mlp", "unet"):
            runs = rp.find(arch=arch, schedule="cosine", d_model=rp.d_model, keypoints=kp)
            if runs:
                paper = PAPER.get(("denoiser", arch), "—")
                rows.append(rp.row(ARCH_LABEL[arch], runs, rp.main_key(arch), paper, [kp]))
    parts += [_table(["denoiser", "2D", "parameters", "MPJPE", "P-MPJPE", "paper (H36M)"], rows, "llrrrr")
              if rows else not_run, "", PAPER_NOTE, ""]

    # -- schedule ------------------------------------------------------------------------------
    parts += ["## Noise schedule (Table IV)", "", f"GCN, d_m {rp.d_model}, T = {st.get('timesteps', 100)}.", ""]
    rows = []
    for kp in rp.kp_list():
        if not rp.find(arch="gcn", schedule="linear", keypoints=kp):
            continue
        for sch in ("cosine", "linear"):
            runs = rp.find(arch="gcn", schedule=sch, d_model=rp.d_model, keypoints=kp)
            if runs:
                rows.append(rp.row(sch, runs, rp.main_key("gcn"), PAPER.get(("schedule", sch), "—"), [kp]))
    parts += [_table(["schedule", "2D", "parameters", "MPJPE", "P-MPJPE", "paper (H36M)"], rows, "llrrrr")
              if rows else not_run, ""]

    # -- hypotheses ----------------------------------------------------------------------------
    hyps = st.get("hypotheses", [1, 5, 10, 20])
    parts += ["## Hypotheses (Table V)", "",
              f"The baseline checkpoints (GCN, cosine, d_m {rp.d_model}) sampled with N hypotheses, DDIM "
              f"{eval_steps} steps. The prediction is the mean of the N hypotheses. The paper's Table V figures "
              "are not quoted here.", ""]
    rows, orows = [], []
    for kp in rp.kp_list():
        runs = rp.find(arch="gcn", schedule="cosine", d_model=rp.d_model, keypoints=kp)
        if not any(f"n{n}-ddim{eval_steps}" in r["evals"] for n in hyps if n > 1 for r in runs):
            continue  # this keypoint set had no N sweep
        for n in hyps:
            key = f"n{n}-ddim{eval_steps}"
            have = [r for r in runs if key in r["evals"]]
            if have:
                rows.append([str(n), kp, _cell(rp.values(have, key, "mpjpe")),
                             _cell(rp.values(have, key, "p_mpjpe"), spread=False),
                             _cell(rp.values(have, key, "fps"), digits=0, spread=False)])
                if n > 1:
                    orows.append([str(n), kp, _cell(rp.values(have, key, "oracle_mpjpe")),
                                  _cell(rp.values(have, key, "oracle_p_mpjpe"), spread=False)])
    if rows:
        parts += [_table(["N", "2D", "MPJPE, mean of N", "P-MPJPE, mean of N", "frames/s"], rows, "rlrrr"), "",
                  f"Below, the {ORACLE_ROW.format(n='N')}: per frame, the hypothesis closest to the ground truth. "
                  "A bound on what a perfect selector could reach, not a result of the method.", "",
                  _table(["N", "2D", "oracle best-of-N MPJPE", "oracle best-of-N P-MPJPE"], orows, "rlrr")
                  if orows else "_No N > 1._", "", f"![MPJPE against N](img/{PLOT_HYP})", ""]
    else:
        parts += [not_run, ""]

    # -- sampler -------------------------------------------------------------------------------
    T = st.get("timesteps", 100)
    parts += ["## Sampler (Table VI)", "",
              f"The baseline checkpoints on exact 2D, N = 1: DDIM with k steps vs DDPM with all T = {T}; frames/s "
              "with the flip test included"
              + (f", on `{m['device']}` ({_threads(m.get('torch_threads', '?'))})" if m.get("device") else "")
              + ". The paper's Table VI figures are not quoted here.", ""]
    runs = rp.find(arch="gcn", schedule="cosine", d_model=rp.d_model, keypoints="gt")
    rows = []
    for sampler, steps in sampler_points(st):
        key = f"n1-{sampler}{steps}"
        have = [r for r in runs if key in r["evals"]]
        if have:
            rows.append([sampler.upper(), str(steps), _cell(rp.values(have, key, "mpjpe")),
                         _cell(rp.values(have, key, "p_mpjpe"), spread=False),
                         _cell(rp.values(have, key, "fps"), digits=0)])
    parts += ([_table(["sampler", "steps", "MPJPE", "P-MPJPE", "frames/s"], rows, "lrrrr"), "",
               f"![MPJPE and frames/s against sampler steps](img/{PLOT_SAMPLER})", ""]
              if len(rows) > 1 else [not_run, ""])

    # -- width ---------------------------------------------------------------------------------
    parts += ["## Width", "", "GCN, cosine schedule, exact 2D unless noted; the training time is per run.", ""]
    rows = []
    widths = sorted({r["config"]["d_model"] for r in rp.find(arch="gcn", schedule="cosine")})
    for kp in rp.kp_list():
        if len([w for w in widths if rp.find(arch="gcn", schedule="cosine", d_model=w, keypoints=kp)]) < 2:
            continue
        for w in widths:
            runs = rp.find(arch="gcn", schedule="cosine", d_model=w, keypoints=kp)
            if runs:
                rows.append(rp.row(f"d_m {w}", runs, rp.main_key("gcn"), None,
                                   [kp, _cell([r.get("train_seconds", 0) / 60 for r in runs], spread=False)
                                    + " min"]))
    parts += [_table(["width", "2D", "training", "parameters", "MPJPE", "P-MPJPE"], rows, "llrrrr")
              if rows else not_run, ""]

    # -- regressor -----------------------------------------------------------------------------
    parts += ["## Diffusion vs the deterministic regressor, clean and noisy 2D", "",
              f"The same GCN backbone (d_m {rp.d_model}) trained as a direct 2D-to-3D regressor (no timestep input, "
              "hence fewer parameters), against the diffusion model at N = 1 and at the largest N (mean of "
              "the hypotheses), each trained and tested on the exact (`gt`) or the detector-like (`det`) 2D.", ""]
    rows = []
    nmax = max(hyps) if hyps else 1
    for kp in rp.kp_list():
        reg = rp.find(arch="regressor", d_model=rp.d_model, keypoints=kp)
        if not reg:
            continue
        base = rp.find(arch="gcn", schedule="cosine", d_model=rp.d_model, keypoints=kp)
        rows.append(rp.row("diffusion (DiffuPose), N = 1", base, rp.main_key("gcn"), None, [kp]))
        if nmax > 1 and rp.values(base, f"n{nmax}-ddim{eval_steps}", "mpjpe"):
            rows.append(rp.row(f"diffusion (DiffuPose), mean of N = {nmax}", base, f"n{nmax}-ddim{eval_steps}",
                               None, [kp]))
        rows.append(rp.row(ARCH_LABEL["regressor"], reg, "n1-regressor", None, [kp]))
    parts += [_table(["model", "2D", "parameters", "MPJPE", "P-MPJPE"], rows, "llrrr") if rows else not_run, ""]

    # -- runs ----------------------------------------------------------------------------------
    parts += ["## Runs", "", "Every run of the study (results.json has every evaluation of each).", ""]
    rows = []
    for r in rp.runs:
        c = r["config"]
        key = rp.main_key(c["arch"])
        mp = r["evals"].get(key, {}).get("mpjpe")
        rows.append([f"`{r['name']}`", c["arch"], c["schedule"], str(c["d_model"]), c["keypoints"], str(r["seed"]),
                     f"{r['params']:,}", str((r.get("checkpoint") or {}).get("step", "?")),
                     fmt_duration(r.get("train_seconds", 0)), f"{r.get('final_loss', float('nan')):.4f}",
                     f"{mp:.1f}" if mp is not None else "—"])
    parts += [_table(["run", "arch", "schedule", "d_m", "2D", "seed", "parameters", "steps", "training",
                      "final loss", "MPJPE"], rows, "lllrlrrrrrr") if rows else not_run, ""]

    # -- reading (kept) --------------------------------------------------------------------
    reading = READING_TODO
    if READING_START in old_text and READING_END in old_text:
        kept = old_text.split(READING_START, 1)[1].split(READING_END, 1)[0].strip()
        reading = kept or READING_TODO
    parts += ["## Reading", "", READING_START, reading, READING_END, ""]
    return "\n".join(parts)


def sampler_points(st: dict) -> list[tuple[str, int]]:
    T = st.get("timesteps", 100)
    return [("ddim", s) for s in st.get("sampler_steps", [2, 5, 10, 20]) if s < T] + [("ddpm", T)]


def save_plots(results: dict, img_dir: Path) -> list[Path]:
    """MPJPE against N (the mean of N vs the oracle best-of-N) and MPJPE + frames/s against the
    sampler steps; matplotlib's object API on the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rp = Report(results)
    st = rp.study
    eval_steps = st.get("eval_steps", 5)
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def series(runs, keys, metric):
        xs, mean, err = [], [], []
        for x, key in keys:
            s = _stats(rp.values(runs, key, metric))
            if s:
                xs.append(x)
                mean.append(s["mean"])
                err.append([s["mean"] - s["min"], s["max"] - s["mean"]])
        return xs, mean, np.array(err).T if err else None

    def save(fig, name):
        path = img_dir / name
        tmp = path.with_name(path.stem + ".tmp.png")
        FigureCanvasAgg(fig).print_png(str(tmp))
        os.replace(tmp, path)
        written.append(path)

    # MPJPE against N
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    ax = fig.add_subplot()
    hyps = st.get("hypotheses", [1, 5, 10, 20])
    colours = {"gt": "#1f77b4", "det": "#d62728"}
    plotted = False
    for kp in rp.kp_list():
        runs = rp.find(arch="gcn", schedule="cosine", d_model=rp.d_model, keypoints=kp)
        keys = [(n, f"n{n}-ddim{eval_steps}") for n in hyps]
        xs, mean, err = series(runs, keys, "mpjpe")
        if len(xs) > 1:
            ax.errorbar(xs, mean, yerr=err, marker="o", capsize=3, color=colours.get(kp), label=f"mean of N ({kp})")
            ox, om, oe = series(runs, keys, "oracle_mpjpe")
            if 1 in xs:  # best of 1 is the single hypothesis itself: the curves start together
                ox, om = [1, *ox], [mean[xs.index(1)], *om]
                oe = None if oe is None else np.concatenate([np.zeros((2, 1)), oe], axis=1)
            ax.errorbar(ox, om, yerr=oe, marker="s", ls="--", capsize=3, color=colours.get(kp),
                        label=f"oracle best-of-N ({kp}; uses ground truth)")
            plotted = True
    if plotted:
        ax.set_xlabel("hypotheses N")
        ax.set_ylabel("MPJPE (mm), lower is better")
        ax.set_xticks(hyps)
        ax.set_title(f"MPJPE against N (CMU test, DDIM {eval_steps}; bars: min–max over seeds)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False, loc="best")
        save(fig, PLOT_HYP)

    # MPJPE and frames/s against sampler steps
    runs = rp.find(arch="gcn", schedule="cosine", d_model=rp.d_model, keypoints="gt")
    pts = sampler_points(st)
    keys = [(steps, f"n1-{s}{steps}") for s, steps in pts]
    xs, mean, err = series(runs, keys, "mpjpe")
    if len(xs) > 1:
        fig = Figure(figsize=(6.4, 4.2), dpi=110)
        ax = fig.add_subplot()
        ax.errorbar(xs, mean, yerr=err, marker="o", capsize=3, color="#1f77b4", label="MPJPE")
        ax.set_xscale("log")
        ax.set_xticks([s for _, s in pts], [f"{s}\n{'DDPM' if n == 'ddpm' else 'DDIM'}" for n, s in pts])
        ax.set_xlabel("sampler steps")
        ax.set_ylabel("MPJPE (mm)", color="#1f77b4")
        ax2 = ax.twinx()
        fx, fm, fe = series(runs, keys, "fps")
        ax2.errorbar(fx, fm, yerr=fe, marker="s", ls="--", capsize=3, color="#ff7f0e", label="frames/s")
        ax2.set_yscale("log")
        ax2.set_ylabel(f"frames/s ({results.get('machine', {}).get('device', '?')}, N = 1)", color="#ff7f0e")
        ax.set_title("MPJPE and speed against sampler steps (CMU test, exact 2D)", fontsize=10)
        ax.grid(alpha=0.3)
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, frameon=False, loc="upper center")
        save(fig, PLOT_SAMPLER)
    return written


def write_report(results: dict, report: Path) -> None:
    old = report.read_text() if report.is_file() else ""
    report.parent.mkdir(parents=True, exist_ok=True)
    if results.get("runs"):
        save_plots(results, report.parent / "img")
    text = build_report(results, old)
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, report)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Rerun the paper's ablation study (denoiser, schedule, N, sampler, width, regressor; exact and "
                    "noisy 2D) on the embedded CMU set: train the runs, evaluate, write results.json and the report.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="defaults (about an hour on a 2-core CPU): " + ", ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in DEFAULTS.items() if k != "max_steps") +
        "\n\nexamples:\n"
        "  python train/ablations.py --dry-run          # plan and time estimate only\n"
        "  python train/ablations.py                    # the study; rerun the same command to resume\n"
        "  python train/ablations.py --report-only      # rebuild docs/RESULTS.md from results.json\n"
        "  python train/ablations.py --device cuda --epochs 200 --downsample 1 --seeds 0 1 2 \\\n"
        "      --widths 128 256 384 --full-test --det-everywhere --out runs/ablations-full")
    g = p.add_argument_group("which runs")
    g.add_argument("--rows", nargs="*", choices=ROWS, default=None,
                   help="ablation rows to train besides the baseline (default: all; none: the baseline only)")
    g.add_argument("--seeds", nargs="+", type=int, default=None, help="training (and sampling) seeds")
    g.add_argument("--widths", nargs="+", type=int, default=None,
                   help="d_m of the width row (e.g. --widths 128 256 384)")
    g.add_argument("--keypoints", nargs="+", choices=["gt", "det"], default=None,
                   help="2D sets of the regressor row and of the N sweep")
    g.add_argument("--det-everywhere", action="store_true",
                   help="also run the denoiser, schedule and width rows on the detector-like 2D")
    t = p.add_argument_group("training (every run)")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--downsample", type=int, default=None, help="keep every k-th training frame")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--d-model", type=int, default=None, help="the baseline width d_m")
    t.add_argument("--blocks", type=int, default=None)
    t.add_argument("--lr", type=float, default=None, help="default: the CMU recipe's")
    t.add_argument("--lr-decay", type=float, default=None, help="default: the CMU recipe's")
    t.add_argument("--timesteps", type=int, default=None, help="diffusion steps T (= the DDPM row)")
    t.add_argument("--max-steps", type=int, default=None, help="stop each run after k steps (smoke tests)")
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    t.add_argument("--backend", default=None, choices=["auto", "reference", "cpu", "cuda", "triton"])
    t.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 avoids OpenMP waits on a CPU other jobs share)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--test-frames", type=int, default=None, help="evenly spread test rows to evaluate on")
    e.add_argument("--full-test", action="store_true", help="the whole test split (11,624 rows)")
    e.add_argument("--eval-steps", type=int, default=None, help="DDIM steps of every row but the sampler's")
    e.add_argument("--hypotheses", nargs="+", type=int, default=None, help="N of the hypotheses row")
    e.add_argument("--sampler-steps", nargs="+", type=int, default=None, help="DDIM steps of the sampler row")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="runs/ablations", help="run folders and results.json")
    o.add_argument("--report", default=None, help="the report; plots go to its img/ (default: docs/RESULTS.md, "
                   "or <out>/RESULTS.md for a --smoke study)")
    o.add_argument("--report-only", action="store_true", help="rebuild the report from <out>/results.json")
    o.add_argument("--dry-run", action="store_true", help="print the plan and the estimate, train nothing")
    o.add_argument("--smoke", action="store_true", help="a micro study in seconds (tests): " + ", ".join(
        f"{k}={v}" for k, v in SMOKE.items()))
    o.add_argument("--verbose", action="store_true", help="the trainer's own progress bars and epoch lines")
    return p


def study_from_args(args) -> Study:
    base = SMOKE if args.smoke else DEFAULTS
    pick = lambda k: base[k] if getattr(args, k) is None else getattr(args, k)  # noqa: E731
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.device(device)
    except RuntimeError:
        raise StudyError(f"--device {device!r} is not a device (cpu, cuda, cuda:1)") from None
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise StudyError(f"--device {device}: torch sees no CUDA device here")
    st = Study(**{k: pick(k) for k in ("epochs", "downsample", "batch_size", "d_model", "blocks", "widths", "seeds",
                                       "keypoints", "rows", "eval_steps", "hypotheses", "sampler_steps", "timesteps",
                                       "max_steps")},
               test_frames=None if args.full_test else pick("test_frames"), det_everywhere=args.det_everywhere,
               lr=args.lr, lr_decay=args.lr_decay, device=device,
               backend=None if args.backend in (None, "auto") else args.backend, out=args.out, smoke=args.smoke)
    positive = {"epochs": st.epochs, "downsample": st.downsample, "batch size": st.batch_size, "d_model": st.d_model,
                "timesteps": st.timesteps, "eval steps": st.eval_steps}
    bad = [f"--{k.replace(' ', '-')} {v}" for k, v in positive.items() if v < 1]
    bad += [f"--widths {w}" for w in st.widths if w < 1] + [f"--hypotheses {n}" for n in st.hypotheses if n < 1]
    bad += [f"--sampler-steps {s}" for s in st.sampler_steps if s < 1]
    if st.test_frames is not None and st.test_frames < 1:
        bad.append(f"--test-frames {st.test_frames}")
    if bad:
        raise StudyError(f"must be >= 1: {', '.join(bad)}")
    if len(set(st.seeds)) != len(st.seeds):
        raise StudyError(f"--seeds {' '.join(map(str, st.seeds))}: each seed once")
    return st


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv

    def report_path(smoke: bool) -> Path:
        # a smoke study never overwrites the repository's report
        return Path(args.report) if args.report else (Path(args.out) / "RESULTS.md" if smoke else DEFAULT_REPORT)

    try:
        if args.report_only:
            path = Path(args.out) / "results.json"
            if not path.is_file():
                raise StudyError(f"no results to report: {path} does not exist (run the study first, or pass the "
                                 "--out it used)")
            try:
                results = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise StudyError(f"{path} is not valid JSON ({e})") from None
            if results.get("format") != FORMAT:
                raise StudyError(f"{path} is not an ablation results file (format is not {FORMAT!r})")
            report = report_path(results.get("study", {}).get("smoke", False))
            write_report(results, report)
            print(f"report: {report}")
            return 0
        if args.threads:
            torch.set_num_threads(args.threads)
        study = study_from_args(args)
        results = run_study(study, args)
        if results:
            report = report_path(study.smoke)
            write_report(results, report)
            print(f"report: {report} (plots in {report.parent / 'img'})")
        return 0
    except StudyError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume (finished runs and evaluations are kept)",
              file=sys.stderr)
        return 130
