"""The spread's calibration: a per-joint scale fitted on the validation part of the training data
(rows the model never trained on: `--val-fraction`, recorded in the checkpoint), stored in the
checkpoint's config and carried into every lift output.

A lift reports `spread` (per joint, the RMS distance of the N hypotheses from their mean: how much
the samples disagree). With a calibration, `radius = factor * scale_j * spread` (factor 2) is the
distance from the aggregate within which `coverage` (90%) of that joint's errors fell on the
validation rows, with the N and sampler the calibration was fitted at. It is a statement about
data like the validation data: on motion unlike the training data, the errors grow faster than
the spread (docs/RESULTS.md measures both).

    diffupose calibrate --checkpoint runs/x/model     # fit on the recorded validation part, write it in

Validation clips of the training people are optimistic for a new person: a scale fitted there
covered ~84% of the test people's errors instead of 90% (docs/RESULTS.md). Held-out people fix
that but cost the model those people. The person correction measures the optimism instead, on two
models of one recipe, one trained with held-out clips (calibrated on them) and one with two or
more held-out people (calibrated by person): per joint, how much larger the second's scale is.
Applied to a model trained on everyone (its scale fitted on its clips, times the correction):

    diffupose calibrate --checkpoint runs/x/model --person-correction runs/clips/model runs/people/model
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

CALIBRATION_KEY = "calibration"
FACTOR = 2.0
MAX_SCALE = 1000.0  # beyond it a "calibration" says the spread carries no information


class CalibrationError(ValueError):
    """A calibration that cannot be fitted or read; the message is the CLI's one line."""


def check_calibration(calib, num_joints: int, where: str) -> dict:
    """The calibration block of a checkpoint config, checked (types, ranges, joint count)."""
    if not isinstance(calib, dict):
        raise CalibrationError(f"{where}: '{CALIBRATION_KEY}' must be an object")
    scale = calib.get("spread_scale")
    if (not isinstance(scale, list) or len(scale) != num_joints
            or not all(isinstance(k, (int, float)) and not isinstance(k, bool) and math.isfinite(k)
                       and 0 <= k <= MAX_SCALE for k in scale)):
        raise CalibrationError(f"{where}: calibration.spread_scale must be {num_joints} numbers in [0, {MAX_SCALE:g}]")
    for key, lo, hi in (("coverage", 0.5, 0.999), ("factor", 0.1, 10.0)):
        v = calib.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
            raise CalibrationError(f"{where}: calibration.{key} must be a number in [{lo}, {hi}]")
    n = calib.get("n_hyp")
    if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= 1000:
        raise CalibrationError(f"{where}: calibration.n_hyp must be a whole number in [2, 1000]")
    corr = calib.get("person_correction")
    if corr is not None:
        f = corr.get("factor") if isinstance(corr, dict) else None
        if (not isinstance(f, list) or len(f) != num_joints
                or not all(isinstance(k, (int, float)) and not isinstance(k, bool) and math.isfinite(k)
                           and 0 < k <= MAX_SCALE for k in f)):
            raise CalibrationError(f"{where}: calibration.person_correction.factor must be {num_joints} positive numbers")
    return calib


def person_correction(clip_calib, person_calib, num_joints: int, names=("clips", "people")) -> list[float]:
    """Per joint, person_calib's scale / clip_calib's (1 where the clip scale is 0: the root): by how
    much a scale fitted on held-out people exceeded one fitted on held-out clips of the training
    people, for two models of the same recipe. clip_calib must be fitted on clips (no `level`),
    person_calib by person (`level`: two or more held-out people), both at the same N and factor."""
    for calib, name in ((clip_calib, names[0]), (person_calib, names[1])):
        if not calib:
            raise CalibrationError(f"{name}: the checkpoint has no calibration (run diffupose calibrate on it first)")
        check_calibration(calib, num_joints, name)
        if calib.get("person_correction") is not None:
            raise CalibrationError(f"{name}: its calibration is itself corrected; give the two plain ones")
    if "level" in clip_calib:
        raise CalibrationError(f"{names[0]}: its calibration was fitted on held-out people; the first checkpoint "
                               "must be calibrated on held-out clips (--val-fraction)")
    if "level" not in person_calib:
        raise CalibrationError(f"{names[1]}: its calibration was not fitted by person; the second checkpoint must "
                               "hold out two people or more (--val-subjects A B)")
    for key in ("n_hyp", "factor"):
        if clip_calib[key] != person_calib[key]:
            raise CalibrationError(f"the two calibrations differ in {key} ({clip_calib[key]} and {person_calib[key]})")
    return [round(p / c, 4) if c > 0 else 1.0 for c, p in zip(clip_calib["spread_scale"], person_calib["spread_scale"])]


def radius(spread: np.ndarray, calib: Optional[dict]) -> Optional[np.ndarray]:
    """[F, J] metres: factor * scale_j * spread, or None without a calibration."""
    if not calib:
        return None
    return (calib["factor"] * np.asarray(calib["spread_scale"], np.float32) * np.asarray(spread, np.float32))


def validation_rows(config: dict):
    """The validation PoseSet a checkpoint recorded (dataset name, keypoints, and the held-out
    people or the fraction and seed)."""
    from .data.dataset import load_dataset, split_validation, split_validation_subjects

    ds = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
    frac = ds.get("val_fraction")
    subjects = ds.get("val_subjects")
    if subjects is not None and not (isinstance(subjects, list) and all(isinstance(s, str) for s in subjects)):
        raise CalibrationError(f"the checkpoint's val_subjects must be a list of names, got {subjects!r}")
    if not subjects and (not isinstance(frac, (int, float)) or isinstance(frac, bool) or not frac > 0):
        raise CalibrationError("the checkpoint records no validation part of its training data (train it with "
                               "--val-fraction, e.g. 0.05, or --val-subjects); a calibration fitted on training rows would be "
                               "optimistic")
    name, keypoints = ds.get("name"), ds.get("keypoints", "gt")
    try:
        train, _ = load_dataset(name, keypoints=keypoints)
        _, val = (split_validation_subjects(train, subjects) if subjects else
                  split_validation(train, float(frac), int(ds.get("val_seed", 0))))
    except (OSError, ValueError, KeyError) as e:
        raise CalibrationError(f"cannot rebuild the validation rows of dataset {name!r} ({keypoints}): {e}") from None
    if len(val) != ds.get("val_frames", len(val)):
        raise CalibrationError(f"the validation part of {name!r} has {len(val)} rows here but the checkpoint recorded "
                               f"{ds.get('val_frames')}: the data changed since training")
    return val


def fit(model, diffusion, val, *, n_hyp: int = 10, steps: int = 5, target: float = 0.9, flip: bool = True,
        seed: int = 0, max_frames: Optional[int] = 4000, backend=None, progress: bool = False,
        by_person: bool = False, correction: Optional[dict] = None) -> dict:
    """The per-joint scale that puts `target` of the validation joint errors of the mean within
    FACTOR * scale * spread (aggregate.calibrate_spread), with the numbers that justify it.

    by_person (validation rows of two or more people held out of training, --val-subjects): the
    scale is fitted at the level at which a scale fitted on one of those people covers `target` of
    another's errors (aggregate.person_level), so that the radius holds for a new person, not just
    for the people it was fitted on (docs/RESULTS.md: fitted at 90% on held-out people, it covered
    87-88% of the errors on the test split's new people; fitted at the cross-person level, 90%).

    correction ({"factor": [J], "from": [two names]}, person_correction): the scale fitted on the
    validation rows, times the factor per joint (recorded; fitted_coverage is then that of the
    corrected scale on the validation rows, above target)."""
    from . import aggregate as agg
    from .evaluate import predict, subsample

    val, _ = subsample(val, max_frames)
    p = predict(model, diffusion, val, n_hyp=n_hyp, steps=steps, flip=flip, seed=seed, backend=backend,
                progress=progress, desc="calibrating")
    err, spr, keep = agg.mean_errors_and_spread(p.hypotheses, val.pose3d, model.skeleton.parents)
    level, extra = target, {}
    if by_person:
        people = np.asarray(val.subject).astype(str)
        try:
            level, cross = agg.person_level(err, spr, people, target, FACTOR)
        except ValueError:
            raise CalibrationError("a calibration by person needs the rows of two held-out people or more "
                                   "(train with --val-subjects A B)") from None
        extra = {"level": level, "cross_person_coverage": round(cross, 4), "people": sorted(set(people.tolist()))}
    scale = np.zeros(len(model.skeleton.parents))  # the root's stays 0 (0 spread, 0 error)
    scale[keep] = agg.calibrate_spread(err, spr, level, FACTOR)
    if correction is not None:
        scale = scale * np.asarray(correction["factor"], np.float64)
        extra["person_correction"] = correction
    if not np.isfinite(scale).all() or scale.max() > MAX_SCALE:
        raise CalibrationError("the hypotheses barely spread (spread ~0): the spread cannot be calibrated")
    return {"spread_scale": [round(float(k), 4) for k in scale], "coverage": target, "factor": FACTOR,
            "n_hyp": n_hyp, "steps": steps, "flip": flip, "val_frames": len(val),
            "raw_coverage": round(agg.coverage(err, spr, FACTOR), 4),
            "fitted_coverage": round(agg.coverage(err, spr * scale[keep], FACTOR), 4), **extra,
            "meaning": (f"per joint, {target:.0%} of the validation errors of the mean of {n_hyp} hypotheses were "
                        f"within factor * spread_scale * spread of it" if not by_person else
                        f"per joint, scales fitted on one held-out person covered {target:.0%} of another's errors "
                        f"of the mean of {n_hyp} hypotheses within factor * spread_scale * spread (fitted at the "
                        f"{level:.1%} level on all {len(extra['people'])} held-out people)")
            + ("; times the person correction: per joint, how much larger a scale fitted by person was than one "
               f"fitted on clips, measured on {' and '.join(correction['from'])}" if correction is not None else "")}


def write(path, calib: dict) -> Path:
    """Store the calibration in a checkpoint's JSON (atomically; the weights are untouched)."""
    from .checkpoint import checkpoint_paths, read_config, write_config

    _, cpath = checkpoint_paths(path)
    config = read_config(path)
    config[CALIBRATION_KEY] = calib
    write_config(cpath, config)
    return cpath
