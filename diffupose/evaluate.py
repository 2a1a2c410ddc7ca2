"""Evaluation: lift a test PoseSet with a model and report the paper's tables.

Predictions never see the ground truth: `predict` reads only the 2D poses (of an array or of a
PoseSet), and the N hypotheses are aggregated by their mean, per-joint median, or the
reprojection-consistent aggregate (diffupose.aggregate: weights from the 2D input alone). The ground
truth is read afterwards, by diffupose.metrics, to score them. The best-of-N oracle needs the
ground truth to choose a hypothesis, so it is a bound, not a prediction: it is computed only on
request and reported only under the name ORACLE_ROW ("oracle best-of-N (uses ground truth; not a
prediction)"). Flip test-time augmentation is on by default, as in the paper.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .aggregate import aggregate as combine
from .diffusion import Diffusion
from .engine import Lifter
from .metrics import Evaluation, evaluate_poseset, format_table
from .model import is_regressor

ORACLE_ROW = "oracle best-of-{n} (uses ground truth; not a prediction)"


@dataclass
class Prediction:
    mean: np.ndarray  # [F, J, 3] metres, root-relative: the aggregate (mean or per-joint median)
    hypotheses: Optional[np.ndarray]  # [F, N, J, 3] metres (None for the regressor, or when not kept)
    seconds: float  # wall time of the lifting (model and sampler only: no data loading, no metrics)


def default_batch_frames(device: torch.device, n_hyp: int) -> int:
    """Frames per denoiser call. On a GPU, large batches (one captured graph each); on a CPU about
    4k samples (frames x N) per call, where measured throughput peaks: larger batches fall out of
    cache, smaller ones pay the per-op overhead."""
    if torch.device(device).type == "cuda":
        return 4096
    return max(64, 4096 // max(n_hyp, 1))


@torch.no_grad()
def predict(model: nn.Module, diffusion: Diffusion, inputs, *, n_hyp: int = 1, steps: int = 5,
            sampler: str = "ddim", flip: bool = True, aggregate: str = "mean", batch_frames: Optional[int] = None,
            device=None, backend: Optional[str] = None, seed: int = 0, dtype=torch.float32,
            progress: bool = False, keep_hypotheses: bool = True, desc: Optional[str] = None) -> Prediction:
    """Lift screen-normalised 2D poses: an array [F, J, 2], or a PoseSet, of which only `pose2d`
    is read (its 3D ground truth is never touched here). aggregate: mean, median, or reproj (the
    reprojection-consistent aggregate of diffupose.aggregate, from the hypotheses and this 2D). A progress bar in frames if `progress`."""
    from tqdm.auto import tqdm

    pose2d = getattr(inputs, "pose2d", inputs)  # a PoseSet: its 2D only
    device = torch.device(device) if device is not None else next(model.parameters()).device
    y = torch.as_tensor(np.asarray(pose2d), dtype=torch.float32, device=device)
    if y.ndim != 3 or y.shape[-1] != 2:
        raise ValueError(f"predict: expected 2D poses [F, J, 2], got shape {tuple(y.shape)}")
    F = y.shape[0]
    batch = batch_frames or default_batch_frames(device, n_hyp)
    regressor = is_regressor(model)
    scale = diffusion.cfg.pose_scale
    if regressor:
        from .skeleton import flip_pose

        model.eval()  # batch norm on its running statistics, no dropout (the Lifter does the same)

        def lift(yc):
            out = model(yc, backend=backend)
            if flip:
                out = 0.5 * (out + flip_pose(model(flip_pose(yc, model.skeleton), backend=backend), model.skeleton))
            return out * scale, None
    else:
        # the Lifter aggregates by mean or median; the reprojection-consistent aggregate reads the
        # hypotheses and the 2D input afterwards (diffupose.aggregate)
        reproj = aggregate == "reproj"
        lifter = Lifter(model, diffusion, n_hyp=n_hyp, steps=steps, sampler=sampler, flip=flip,
                        aggregate="mean" if reproj else aggregate, batch_frames=batch, device=device,
                        backend=backend, seed=seed, dtype=dtype)

        def lift(yc):
            r = lifter(yc)
            if reproj:
                return combine(r.hypotheses, yc, "reproj").to(r.mean.dtype), r.hypotheses
            return r.mean, r.hypotheses

    means, hyps = [], []
    bar = tqdm(total=F, unit="frame", leave=False, disable=True if not progress else None,
               desc=desc or (f"lifting x{n_hyp}" if not regressor else "regressing"))
    t0 = time.perf_counter()
    for s in range(0, F, batch):
        yc = y[s:s + batch]
        n = yc.shape[0]
        if not regressor and lifter.use_graph and n < batch < F:
            # the ragged last batch is padded to the full one, so a single captured graph serves every batch
            yc = torch.cat([yc, yc[-1:].expand(batch - n, -1, -1)])
        mean, hyp = lift(yc)
        means.append(mean[:n].float().cpu())
        if hyp is not None and keep_hypotheses:
            hyps.append(hyp[:n].float().cpu())
        bar.update(n)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    bar.close()
    mean = torch.cat(means).numpy() if means else np.zeros((0, y.shape[1], 3), np.float32)
    hyp = torch.cat(hyps).numpy() if hyps else None
    return Prediction(mean, hyp, seconds)


def evaluate_model(model: nn.Module, diffusion: Diffusion, test, *, hypotheses: Sequence[int] = (1, 10),
                   steps: int = 5, sampler: str = "ddim", flip: bool = True, aggregate: str = "mean", seed: int = 0,
                   backend=None, batch_frames: Optional[int] = None, dtype=torch.float32, device=None,
                   progress: bool = False, oracle: bool = True,
                   keep_predictions: bool = False) -> dict[int, Evaluation]:
    """N -> Evaluation on the PoseSet `test` (per-action MPJPE / P-MPJPE; oracle best-of-N errors
    where N > 1 and `oracle`). Each N is lifted from the 2D alone, then scored against the 3D.
    ev.extra holds "seconds" and "fps" (test frames / lifting wall time) and, with
    keep_predictions, the Prediction itself."""
    out = {}
    ns = (1,) if is_regressor(model) else tuple(dict.fromkeys(hypotheses))
    for n in ns:
        want_hyp = keep_predictions or (oracle and n > 1)
        pred = predict(model, diffusion, test, n_hyp=n, steps=steps, sampler=sampler, flip=flip,
                       aggregate=aggregate, seed=seed, backend=backend, batch_frames=batch_frames, dtype=dtype,
                       device=device, progress=progress, keep_hypotheses=want_hyp)
        if not np.isfinite(pred.mean).all():
            raise FloatingPointError(f"the model produced NaN or infinite poses (N={n})")
        # scoring: the first and only place the ground truth is read
        ev = evaluate_poseset(pred.mean, test, pred.hypotheses if (oracle and n > 1) else None)
        ev.extra["seconds"] = pred.seconds
        ev.extra["fps"] = len(test) / max(pred.seconds, 1e-9)
        if keep_predictions:
            ev.extra["prediction"] = pred
        out[n] = ev
    return out


# ---------------------------------------------------------------------------------------------
# baselines and subsets
# ---------------------------------------------------------------------------------------------
def mean_pose(train) -> np.ndarray:
    """The training set's mean root-relative pose [J, 3] (metres): the constant prediction a model
    must beat to have learnt anything from the 2D input."""
    return np.asarray(train.pose3d, dtype=np.float64).mean(axis=0)


def evaluate_mean_pose(train, test) -> Evaluation:
    """The mean-pose baseline on `test`: every frame predicted as mean_pose(train), same metrics."""
    pred = np.broadcast_to(mean_pose(train), test.pose3d.shape)
    return evaluate_poseset(pred, test)


def subsample(ps, max_frames: Optional[int]):
    """(the PoseSet cut to at most max_frames rows spread evenly over it, so that every clip,
    camera and action keeps its share; the row indices kept). None or 0: all rows."""
    n = len(ps)
    if not max_frames or max_frames >= n:
        return ps, np.arange(n)
    idx = np.unique(np.linspace(0, n - 1, max_frames).round().astype(np.int64))
    return ps.subset(idx), idx


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------
def tables(evals: Mapping[int, Evaluation], method: str = "DiffuPose", title: str = "",
           baselines: Optional[Mapping[str, Evaluation]] = None, oracle_row: Optional[str] = None) -> str:
    """Protocol #1 (MPJPE) and #2 (P-MPJPE) tables in Table I's layout: a row per baseline, a row
    per N, and the oracle best-of-N rows (where computed) last. oracle_row names them ("{n}" is
    replaced by N; `diffupose eval` passes ORACLE_ROW); by default "<method> N=n oracle (best of n)",
    the name the training logs use."""
    baselines = dict(baselines or {})
    first = next(iter(evals.values())) if evals else next(iter(baselines.values()))
    parts = []
    for protocol, name in (("mpjpe", "Protocol #1: MPJPE (mm)"), ("p_mpjpe", "Protocol #2: P-MPJPE (mm)")):
        rows = {b: getattr(ev, protocol) for b, ev in baselines.items()}
        rows.update({f"{method} N={n}": getattr(ev, protocol) for n, ev in evals.items()})
        for n, ev in evals.items():
            oracle = getattr(ev, "oracle_" + protocol)
            if oracle is not None:
                h = ev.num_hypotheses or n
                rows[oracle_row.format(n=h) if oracle_row else f"{method} N={n} oracle (best of {h})"] = oracle
        parts.append(format_table(rows, first.actions, title=f"{title}{name}"))
    return "\n\n".join(parts)


def summary(evals: Mapping[int, Evaluation]) -> dict:
    """Flat numbers for logs and JSON: P1/P2 averages per N (and the oracle's, so named)."""
    out = {}
    for n, ev in evals.items():
        out[f"p1_n{n}"] = ev.mpjpe["Avg"]
        out[f"p2_n{n}"] = ev.p_mpjpe["Avg"]
        if ev.oracle_mpjpe is not None:
            out[f"oracle_p1_n{n}"] = ev.oracle_mpjpe["Avg"]
            out[f"oracle_p2_n{n}"] = ev.oracle_p_mpjpe["Avg"]
    return out


def per_action(evals: Mapping[int, Evaluation], baselines: Optional[Mapping[str, Evaluation]] = None) -> dict:
    """The tables as JSON: {"N=1": {"mpjpe": {action: mm, ..., "Avg": mm}, "p_mpjpe": ..., "seconds",
    "fps"}, ..., baseline name: {...}, "oracle best-of-N (...)": {...} where computed}."""
    out = {}
    for name, ev in (baselines or {}).items():
        out[name] = {"mpjpe": ev.mpjpe, "p_mpjpe": ev.p_mpjpe}
    for n, ev in evals.items():
        out[f"N={n}"] = {"mpjpe": ev.mpjpe, "p_mpjpe": ev.p_mpjpe,
                         **{k: ev.extra[k] for k in ("seconds", "fps") if k in ev.extra}}
    for n, ev in evals.items():
        if ev.oracle_mpjpe is not None:
            out[ORACLE_ROW.format(n=ev.num_hypotheses or n)] = {"mpjpe": ev.oracle_mpjpe,
                                                                 "p_mpjpe": ev.oracle_p_mpjpe}
    return out


# the results of `diffupose eval` and `diffupose demo` (the command prints them; these build them)
def load_test_sets(name: str, data_dir, keypoints: Optional[str], cameras, config: dict, model):
    """(train, test, keypoints used, where that choice came from) of a dataset; LiftError for files
    that are missing or unreadable and for a skeleton the checkpoint does not have."""
    from pathlib import Path

    from .api import LiftError
    from .data.dataset import load_dataset

    recorded = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
    if keypoints is not None:
        source = "--keypoints"
    elif recorded.get("name") == name and isinstance(recorded.get("keypoints"), str):
        keypoints, source = recorded["keypoints"], "the checkpoint's training input"
    else:
        keypoints, source = "gt", "default"
    where = f"--dataset {name}" + (f" --data-dir {data_dir}" if data_dir else "")
    try:
        train, test = load_dataset(name, Path(data_dir).expanduser() if data_dir else None, keypoints, cameras)
    except OSError as e:
        text = f"{e.strerror}: {e.filename}" if e.strerror and e.filename else str(e)
        raise LiftError(f"{where}: {text}") from None
    except (ValueError, KeyError) as e:
        raise LiftError(f"{where}: {e}") from None
    if len(test) == 0:
        raise LiftError(f"{where}: the test split has no frames")
    if test.skeleton.name != model.cfg.skeleton:
        raise LiftError(f"the checkpoint's model is for the {model.cfg.skeleton} skeleton but {name} has "
                       f"{test.skeleton.name} poses; evaluate it on a dataset of its skeleton")
    return train, test, keypoints, source


def results_doc(kind: str, config: dict, wpath, dataset: dict, settings: dict, evals,
                 baselines=None) -> dict:
    """The JSON document of `diffupose eval --json` / `diffupose demo --json`: every number with the
    dataset, the settings and the checkpoint (its weights' hash)."""
    from . import __version__
    from .api import sha256_of

    doc = {
        "format": f"diffupose-{kind}", "diffupose_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "units": "millimetres (MPJPE: protocol #1; P-MPJPE: protocol #2, after a similarity alignment); "
                 "per action, then Avg = the mean over actions",
        "summary": summary(evals),
        "per_action": per_action(evals, baselines),
        "frames_per_action": next(iter(evals.values())).frames,
        "dataset": dataset, "settings": settings,
        "checkpoint": {"path": str(wpath.resolve()), "weights_sha256": sha256_of(wpath),
                       **{k: config.get(k) for k in ("model", "diffusion", "dataset", "metrics")}},
    }
    if any(ev.oracle_mpjpe is not None for ev in evals.values()):
        doc["oracle_note"] = (f"rows named {ORACLE_ROW.format(n='N')!r} and summary keys oracle_*: the hypothesis "
                              "nearest the ground truth per frame; they use the ground truth, so they are a bound, "
                              "not a prediction")
    return doc


def write_results_json(path, doc: dict) -> None:
    """Write a results document atomically (complete or not at all)."""
    import json

    from .checkpoint import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode())


from .checkpoint import DEFAULT_CHECKPOINT  # noqa: E402,F401 (re-exported: bench/smoothing.py, tests)


def table6(args, device) -> list[dict]:
    """Paper Table VI: frames per second and MPJPE against the number of sampler steps (DDIM 2, 5,
    10, 20; DDPM 100), for N = 1 and N = 10, on a dataset's test split (the embedded CMU set by
    default), or args.max_frames rows of it spread evenly (default: all on a GPU, 1,000 on the CPU,
    where DDPM at N = 10 over the whole split would take most of an hour). FPS is test frames over
    the wall time of lifting them (batched, warm)."""
    from .checkpoint import load_checkpoint
    from .data.dataset import load_dataset

    model, diffusion, _ = load_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT, device)
    _, test = load_dataset(args.dataset, args.data_dir)
    max_frames = getattr(args, "max_frames", None)
    if max_frames is None:
        max_frames = 0 if device.type == "cuda" else 1000
    n_all = len(test)
    test, _ = subsample(test, max_frames)
    print(f"# Table VI on {len(test):,} of {n_all:,} test rows of {args.dataset}", flush=True)
    if test.skeleton.name != model.cfg.skeleton:
        raise ValueError(f"the checkpoint is for {model.cfg.skeleton}, the dataset has {test.skeleton.name}")
    backend = None if args.backend == "auto" else args.backend
    rows = []
    print("| steps | sampler | N | frames/s | MPJPE (mm) | P-MPJPE (mm) |")
    print("|---:|---|---:|---:|---:|---:|")
    y = torch.as_tensor(test.pose2d, device=device)
    for steps in (2, 5, 10, 20, diffusion.T):
        sampler = "ddpm" if steps == diffusion.T else "ddim"
        for n in (1, 10):
            batch = default_batch_frames(device, n)
            lifter = Lifter(model, diffusion, n_hyp=n, steps=steps, sampler=sampler, flip=True, batch_frames=batch,
                            backend=backend, device=device)
            with torch.no_grad():
                lifter(y[:batch])  # warm-up: kernels, inference caches, the captured graph
                t0 = time.perf_counter()
                res = lifter(y)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - t0
            ev = evaluate_poseset(res.mean.cpu().numpy(), test)
            row = {"steps": steps, "sampler": sampler, "hyp": n, "fps": len(test) / seconds,
                   "mpjpe": ev.mpjpe["Avg"], "p_mpjpe": ev.p_mpjpe["Avg"]}
            rows.append(row)
            print(f"| {steps} | {sampler} | {n} | {row['fps']:,.0f} | {row['mpjpe']:.1f} | {row['p_mpjpe']:.1f} |",
                  flush=True)
    return rows


def aggregate_report(model: nn.Module, diffusion: Diffusion, val, test, *, n_max: int = 20, ns: Sequence[int] = (10, 20),
                     temperatures: Sequence[float] = (0.0, 0.5, 1.0, 2.0), steps: int = 5, flip: bool = True,
                     seed: int = 0, target: float = 0.9, backend=None) -> dict:
    """The aggregates of diffupose.aggregate side by side, and the spread before and after calibration.

    One lift of n_max hypotheses per frame of `val` (held-out training frames) and of `test`; the
    first n of them stand for N = n. On val: the reproj temperature with the lowest MPJPE and the
    spread's scale k (per joint, and one global) that puts `target` of the joint errors within
    2 k spread (the root, 0 in every hypothesis, left out). On test: MPJPE (Avg over actions, as `diffupose eval`, and over all frames) of
    mean, median and reproj at each N; coverage within 2x spread and Spearman(spread, error) of
    the mean's joint errors, raw and calibrated. The ground truth of val is used to fit, that of
    test only to score."""
    from . import aggregate as agg

    def lift(ps):
        p = predict(model, diffusion, ps, n_hyp=n_max, steps=steps, flip=flip, seed=seed, backend=backend)
        return torch.as_tensor(p.hypotheses, dtype=torch.float64), torch.as_tensor(ps.pose2d, dtype=torch.float64)

    def joint_errors(pred, ps):
        return (torch.as_tensor(pred) - torch.as_tensor(ps.pose3d, dtype=torch.float64)).norm(dim=-1).numpy()

    out: dict = {"n_max": n_max, "val_frames": len(val), "test_frames": len(test), "rows": []}
    hv, yv = lift(val)
    ht, yt = lift(test)
    for n in ns:
        # the temperature chosen on val, per N
        val_err = {tau: float(joint_errors(agg.aggregate(hv[:, :n], yv, "reproj", tau), val).mean() * 1000)
                   for tau in temperatures}
        best = min(val_err, key=val_err.get)
        out[f"val_reproj_mm_n{n}"] = val_err
        for name, how, tau in (("mean", "mean", None), ("median", "median", None),
                               (f"reproj (select, t=0)", "reproj", 0.0), (f"reproj (t={best:g}, from val)", "reproj", best)):
            pred = agg.aggregate(ht[:, :n], yt, how, tau if tau is not None else agg.DEFAULT_TEMPERATURE)
            ev = evaluate_poseset(pred.numpy(), test)
            out["rows"].append({"N": n, "aggregate": name, "mpjpe_avg": ev.mpjpe["Avg"],
                                "mpjpe_frames": float(joint_errors(pred, test).mean() * 1000),
                                "p_mpjpe_avg": ev.p_mpjpe["Avg"]})
        # the spread, as the Lifter reports it (about the mean), against the mean's joint errors
        # (the root, 0 in every hypothesis and in the truth, left out)
        e_val, s_val, _ = agg.mean_errors_and_spread(hv[:, :n], val.pose3d, model.skeleton.parents)
        e_test, s_test, _ = agg.mean_errors_and_spread(ht[:, :n], test.pose3d, model.skeleton.parents)
        k_joint = agg.calibrate_spread(e_val, s_val, target)
        k_global = agg.calibrate_spread(e_val, s_val, target, per_joint=False)
        out[f"spread_n{n}"] = {
            "k_global": float(k_global[0]), "k_per_joint": [round(float(k), 3) for k in k_joint],
            "coverage_raw": agg.coverage(e_test, s_test), "spearman_raw": agg.spearman(s_test, e_test),
            "coverage_global": agg.coverage(e_test, s_test * k_global),
            "spearman_global": agg.spearman(s_test * k_global, e_test),
            "coverage_per_joint": agg.coverage(e_test, s_test * k_joint),
            "spearman_per_joint": agg.spearman(s_test * k_joint, e_test)}
    return out


def clip_labels(poses) -> np.ndarray:
    """[N] one label per row of a PoseSet naming its clip and camera: rows of a video share one."""
    cam = np.asarray(poses.camera).astype(str)
    return np.char.add(np.char.add(np.char.add(np.asarray(poses.subject), "|"), np.asarray(poses.clip)),
                       np.char.add("|", cam))


def smoothing_rows(model: nn.Module, diffusion: Diffusion, test, fps: float, settings: Sequence[tuple[float, float]],
                   *, n_hyp: int = 10, steps: int = 5, seed: int = 0, device=None, backend=None,
                   progress: bool = False) -> list[dict]:
    """The One Euro filter on the aggregate of each clip of `test` (a PoseSet of videos, rows of a
    clip in time order): MPJPE (mm) and acceleration error (mm / frame^2) without it (the first
    row, min_cutoff None) and with each (min_cutoff Hz, beta per m/s) of `settings`. The poses are
    lifted once, from the 2D alone; the filter never sees the ground truth."""
    from .metrics import acceleration_error, mpjpe
    from .smoothing import smooth_clips

    pred = predict(model, diffusion, test, n_hyp=n_hyp, steps=steps, seed=seed, device=device, backend=backend,
                   progress=progress, keep_hypotheses=False).mean
    clips = clip_labels(test)
    rows = [{"min_cutoff": None, "beta": None, "mpjpe": mpjpe(pred, test.pose3d),
             "accel": acceleration_error(pred, test.pose3d, clips)}]
    for min_cutoff, beta in settings:
        smooth = smooth_clips(pred, clips, fps, min_cutoff=min_cutoff, beta=beta)
        rows.append({"min_cutoff": min_cutoff, "beta": beta, "mpjpe": mpjpe(smooth, test.pose3d),
                     "accel": acceleration_error(smooth, test.pose3d, clips)})
    return rows
