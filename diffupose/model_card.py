"""The numbers of a checkpoint's model card, measured in one run (`train/model_card.py`):

- test MPJPE / P-MPJPE (mean over actions, as `diffupose eval`) of the checkpoint at N = 1, 10, 20
  (mean and per-joint median of the N) beside the training mean pose and any baseline
  checkpoints (the MLP regressor trained on the same data), on each test set asked for; the
  oracle best-of-N under that name only;
- the sampler: DDIM with k steps against DDPM over all T, at N = 1 and 10, on one subset;
- the denoiser's one-step x0 estimate by timestep (`x0_error_by_timestep`);
- the spread: coverage within 2x spread and within the checkpoint's calibrated radius, and the
  rank correlation of spread and error, on test.

Ground truth is read only to score, and (x0_error_by_timestep, by design) as the input of a
denoiser diagnostic that is not a prediction.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .evaluate import evaluate_mean_pose, evaluate_model, predict, subsample
from .metrics import evaluate_poseset


@torch.no_grad()
def x0_error_by_timestep(model, diffusion, poses, ts: Sequence[int], *, flip: bool = True, seed: int = 0,
                         batch: int = 2048, backend=None) -> dict[int, float]:
    """t -> MPJPE (mm, over all rows) of the denoiser's x0 estimate from x_t = q_sample(x0, t, noise):
    x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), root-centred. How much of the pose
    one call recovers at each noise level: a diagnostic of the denoiser, not a prediction (its
    input is the noised ground truth)."""
    from .diffusion import denoise

    model.eval()
    skel = model.skeleton if flip else None
    root = model.skeleton.parents.index(-1)
    scale = diffusion.cfg.pose_scale
    gen = torch.Generator().manual_seed(seed)
    x0_all = torch.as_tensor(poses.pose3d, dtype=torch.float32) / scale
    y_all = torch.as_tensor(poses.pose2d, dtype=torch.float32)
    out = {}
    for t in ts:
        ab = float(diffusion.alpha_bar[t])
        errs = []
        for s in range(0, len(x0_all), batch):
            x0, y = x0_all[s:s + batch], y_all[s:s + batch]
            noise = torch.randn(x0.shape, generator=gen)
            xt = diffusion.q_sample(x0, torch.full((len(x0),), t, dtype=torch.long), noise)
            eps = denoise(model, xt, y, t, skel, backend).float()
            x0_hat = (xt - (1 - ab) ** 0.5 * eps) / ab ** 0.5
            x0_hat = x0_hat - x0_hat[:, root:root + 1]
            errs.append(((x0_hat - x0) * scale).norm(dim=-1).mean(-1))
        out[int(t)] = float(torch.cat(errs).mean() * 1000)
    return out


def _row(ev) -> dict:
    return {"mpjpe": round(ev.mpjpe["Avg"], 2), "p_mpjpe": round(ev.p_mpjpe["Avg"], 2)}


def test_rows(model, diffusion, train, test, baselines: dict, parts: dict, *, ns=(1, 10, 20), steps: int = 5,
              flip: bool = True, seed: int = 0, progress: bool = False) -> dict:
    """part -> rows name -> {mpjpe, p_mpjpe}: the mean pose, each baseline (name -> (model,
    diffusion)), the checkpoint at each N with mean and median (one lift of `test` per N; the
    median is of the same hypotheses; each part a mask [rows] of `test`), and the oracle best-of-N,
    named so. The seconds of each lift of the whole of `test` go in rows["seconds"]."""
    out = {name: {} for name in parts}
    seconds, hypotheses = {}, {}

    def score(label, pred, hyp=None, oracle=False):
        for name, mask in parts.items():
            ev = evaluate_poseset(pred[mask], test.subset(mask), hyp[mask] if hyp is not None else None)
            out[name][label] = _row(ev)
            if oracle:
                out[name][f"oracle best of {hyp.shape[1]} (uses ground truth; not a prediction)"] = {
                    "mpjpe": round(ev.oracle_mpjpe["Avg"], 2), "p_mpjpe": round(ev.oracle_p_mpjpe["Avg"], 2)}

    for name, mask in parts.items():
        out[name]["training mean pose"] = _row(evaluate_mean_pose(train, test.subset(mask)))
    for label, (bm, bd) in baselines.items():
        p = predict(bm, bd, test, n_hyp=1, steps=steps, flip=flip, seed=seed)
        seconds[label] = round(p.seconds, 1)
        score(label, p.mean)
    for n in ns:
        p = predict(model, diffusion, test, n_hyp=n, steps=steps, flip=flip, seed=seed, progress=progress,
                    desc=f"N={n}")
        label = f"DiffuPose N={n}" + (", mean" if n > 1 else "")
        seconds[label] = round(p.seconds, 1)
        hypotheses[n] = p.hypotheses
        score(label, p.mean, p.hypotheses if n > 1 else None, oracle=n > 1)
        if n > 1:
            score(f"DiffuPose N={n}, median", np.median(p.hypotheses, axis=1))
    return {"rows": out, "seconds": seconds, "hypotheses": hypotheses}


def sampler_rows(model, diffusion, test, *, ns=(1, 10), ddim_steps=(2, 5, 10, 20), flip: bool = True,
                 seed: int = 0) -> list[dict]:
    """DDIM with k steps and DDPM over all T at each N: MPJPE and frames/s on `test`."""
    out = []
    for n in ns:
        for sampler, k in [*(("ddim", k) for k in ddim_steps), ("ddpm", diffusion.T)]:
            ev = evaluate_model(model, diffusion, test, hypotheses=(n,), steps=k, sampler=sampler, flip=flip,
                                seed=seed, oracle=False)[n]
            out.append({"N": n, "sampler": sampler, "steps": k, **_row(ev), "fps": round(ev.extra["fps"], 1)})
    return out


def spread_rows(model, diffusion, test, calib: Optional[dict], *, n: int = 10, steps: int = 5, flip: bool = True,
                seed: int = 0, hypotheses: Optional[np.ndarray] = None) -> dict:
    """Coverage of the mean's joint errors within 2x spread and within the calibrated radius, and
    Spearman(spread, error), on `test` (the root left out: 0 error, 0 spread)."""
    from . import aggregate as agg
    from .calibration import radius

    if hypotheses is None:  # else: a lift of `test` at this N, from test_rows
        hypotheses = predict(model, diffusion, test, n_hyp=n, steps=steps, flip=flip, seed=seed).hypotheses
    err, spr, keep = agg.mean_errors_and_spread(hypotheses, test.pose3d, model.skeleton.parents)
    out = {"N": n, "frames": len(test), "coverage_2x_spread": round(agg.coverage(err, spr), 4),
           "spearman": round(agg.spearman(spr, err), 4)}
    if calib:  # the radius of the kept joints
        rad = radius(spr, {**calib, "spread_scale": [calib["spread_scale"][j] for j in keep]})
        out["coverage_calibrated_radius"] = round(float(np.mean(err <= rad)), 4)
        out["calibration_fitted_at_N"] = calib["n_hyp"]
    return out


def card(model, diffusion, config: dict, train, test, parts: dict, baselines: dict, *, max_frames: int = 0,
         sampler_frames: int = 1000, x0_frames: int = 2000, ts: Optional[Sequence[int]] = None, flip: bool = True,
         seed: int = 0, progress: bool = False, log=print) -> dict:
    """Every section of the card on `test` (cut to max_frames rows spread evenly); parts: name ->
    subjects, each a table of its own (e.g. the whole test split and each dataset in it)."""
    T = diffusion.T
    # not t = T-1: there abar ~ 1e-7 turns any eps error into metres (no sampler starts there)
    ts = ts or sorted({min(T - 2, round(f * T)) for f in (0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9)})
    sub, _ = subsample(test, max_frames)
    masks = {name: np.isin(sub.subject, list(subjects)) for name, subjects in parts.items()}
    log(f"[card] test rows: {len(sub):,} of {len(test):,} test frames")
    rows = test_rows(model, diffusion, train, sub, baselines, masks, flip=flip, seed=seed, progress=progress)
    hyps = rows.pop("hypotheses")
    out: dict = {"frames": {name: int(m.sum()) for name, m in masks.items()}, "frames_in_split": len(test), **rows}
    log("[card] spread")
    out["spread"] = spread_rows(model, diffusion, sub, config.get("calibration"), flip=flip, seed=seed,
                                hypotheses=hyps.get(10))
    s2, _ = subsample(test, sampler_frames)
    log(f"[card] samplers on {len(s2):,} frames")
    out["samplers"] = {"frames": len(s2), "rows": sampler_rows(model, diffusion, s2, flip=flip, seed=seed)}
    s3, _ = subsample(test, x0_frames)
    log(f"[card] x0 error by timestep on {len(s3):,} frames")
    out["x0_by_timestep"] = {"frames": len(s3), "mpjpe_mm": x0_error_by_timestep(model, diffusion, s3, ts,
                                                                                 flip=flip, seed=seed)}
    return out


def markdown(doc: dict) -> str:
    """The card's tables as Markdown."""
    lines = []
    for name, rows in doc["rows"].items():
        lines += [f"**{name}** ({doc['frames'][name]:,} test frames)", "",
                  "| model | MPJPE (mm) | P-MPJPE (mm) |", "| --- | ---: | ---: |"]
        lines += [f"| {k} | {v['mpjpe']:.1f} | {v['p_mpjpe']:.1f} |" for k, v in rows.items()]
        lines.append("")
    lines += ["Lifting seconds (all parts together): " + ", ".join(f"{k} {v:g} s" for k, v in doc["seconds"].items()),
              ""]
    s = doc["spread"]
    lines += [f"Spread (N = {s['N']}, {s['frames']:,} frames): {s['coverage_2x_spread']:.1%} of joint errors within "
              f"2x spread" + (f", {s['coverage_calibrated_radius']:.1%} within the calibrated radius"
                              if "coverage_calibrated_radius" in s else "") + f"; Spearman {s['spearman']:.2f}.", ""]
    sm = doc["samplers"]
    lines += [f"Samplers ({sm['frames']:,} frames):", "", "| N | sampler | steps | MPJPE | frames/s |",
              "| ---: | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['N']} | {r['sampler']} | {r['steps']} | {r['mpjpe']:.1f} | {r['fps']:,.0f} |" for r in sm["rows"]]
    x0 = doc["x0_by_timestep"]
    lines += ["", f"One-step x0 error by timestep ({x0['frames']:,} frames; a denoiser diagnostic, its input is the "
              "noised ground truth):", "", "| t | " + " | ".join(str(t) for t in x0["mpjpe_mm"]) + " |",
              "|" + " ---: |" * (len(x0["mpjpe_mm"]) + 1),
              "| mm | " + " | ".join(f"{v:.1f}" for v in x0["mpjpe_mm"].values()) + " |"]
    return "\n".join(lines) + "\n"
