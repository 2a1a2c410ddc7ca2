"""The spread's calibration: fitted on the validation rows a checkpoint records, written into its
JSON, checked on load, carried into lifts (Lifted.radius), refused without a validation part."""
import json

import numpy as np
import pytest
import torch

from diffupose import calibration, cli
from diffupose.api import load_lifter
from diffupose.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from diffupose.data.dataset import load_dataset, split_validation
from diffupose.diffusion import DiffusionConfig
from diffupose.model import ModelConfig, build_model

pytestmark = pytest.mark.usefixtures("one_thread")
FRAC = 0.05


def _tiny(path, dataset):
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=16, n_blocks=1, d_time=8))
    save_checkpoint(path, model, DiffusionConfig(T=20, clip_x0=2.0, pose_scale=0.3), dataset=dataset)
    return str(path)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    train, _ = load_dataset("hdm05")
    val_frames = len(split_validation(train, FRAC, 0)[1])
    ckpt = _tiny(tmp_path_factory.mktemp("cal") / "tiny", {"name": "hdm05", "keypoints": "gt", "val_fraction": FRAC,
                                                          "val_seed": 0, "val_frames": val_frames})
    rc = cli.main(["calibrate", "--checkpoint", ckpt, "-n", "3", "--steps", "2", "--max-frames", "80", "-q",
                   "--device", "cpu"])
    assert rc == 0
    return ckpt


def test_calibrate_writes_a_checked_calibration(calibrated, capsys):
    config = json.loads(open(calibrated + ".json").read())
    cal = config["calibration"]
    assert len(cal["spread_scale"]) == 17 and cal["spread_scale"][0] == 0  # the root: 0 spread, 0 error
    assert all(k > 0 for k in cal["spread_scale"][1:]) and cal["n_hyp"] == 3 and cal["val_frames"] == 80
    # the fitted scale reaches the coverage on the rows it was fitted on (a quantile: at least 90%)
    assert cal["fitted_coverage"] >= 0.9 - 1 / (80 * 16)
    load_checkpoint(calibrated)  # accepted


def test_lift_carries_the_calibration(calibrated):
    lifter = load_lifter(calibrated, device="cpu", hypotheses=3, steps=2, backend="reference")
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(400, 600, (4, 17, 2)), np.ones((4, 17, 1))], -1)
    res = lifter.lift(kp, image_size=(1000, 1000), layout="h36m17", warn=False)
    cal = res.meta["checkpoint"]["calibration"]
    np.testing.assert_allclose(res.radius, 2 * np.asarray(cal["spread_scale"]) * res.spread, rtol=1e-6)
    assert "spread_scale" in res.meta["arrays"]["spread"]


def test_calibration_is_checked_on_load(calibrated, tmp_path):
    config = json.loads(open(calibrated + ".json").read())
    for bad in ({"spread_scale": [1.0] * 16}, {"spread_scale": [float("nan")] * 17}, {"coverage": 2},
                {"n_hyp": 1}, {"spread_scale": "big"}):
        stem = tmp_path / "bad"
        (tmp_path / "bad.safetensors").write_bytes(open(calibrated + ".safetensors", "rb").read())
        (tmp_path / "bad.json").write_text(json.dumps({**config, "calibration": {**config["calibration"], **bad}}))
        with pytest.raises(CheckpointError, match="calibration"):
            load_checkpoint(stem)


def test_refused_without_a_validation_part(tmp_path, capsys):
    ckpt = _tiny(tmp_path / "noval", {"name": "hdm05", "keypoints": "gt"})
    rc = cli.main(["calibrate", "--checkpoint", ckpt, "-q", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc != 0 and "--val-fraction" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    ckpt = _tiny(tmp_path / "moved", {"name": "hdm05", "keypoints": "gt", "val_fraction": FRAC, "val_frames": 7})
    rc = cli.main(["calibrate", "--checkpoint", ckpt, "-q", "--device", "cpu"])
    assert rc != 0 and "the data changed since training" in capsys.readouterr().err


def test_validation_rows_of_held_out_people():
    """A checkpoint trained with --val-subjects: the calibration's rows are every row of those people."""
    train, _ = load_dataset("hdm05")
    who = sorted(set(train.subject.tolist()))[0]
    n = int((train.subject == who).sum())
    val = calibration.validation_rows({"dataset": {"name": "hdm05", "keypoints": "gt", "val_fraction": 0.0,
                                                   "val_subjects": [who], "val_frames": n}})
    assert len(val) == n and set(val.subject.tolist()) == {who}
    with pytest.raises(calibration.CalibrationError, match="not among the training people"):
        calibration.validation_rows({"dataset": {"name": "hdm05", "keypoints": "gt", "val_subjects": ["nobody"]}})
    with pytest.raises(calibration.CalibrationError, match="list of names"):
        calibration.validation_rows({"dataset": {"name": "hdm05", "keypoints": "gt", "val_subjects": "bd"}})


def test_calibrate_by_person_with_two_held_out_people(tmp_path, capsys):
    """--val-subjects with two people: the scale is fitted at the cross-person level (>= the
    coverage), recorded with the people and the cross-person coverage; the line says so."""
    train, _ = load_dataset("hdm05")
    who = sorted(set(train.subject.tolist()))[:2]
    n = int(np.isin(train.subject, who).sum())
    ckpt = _tiny(tmp_path / "people", {"name": "hdm05", "keypoints": "gt", "val_fraction": 0.0, "val_subjects": who,
                                       "val_frames": n})
    rc = cli.main(["calibrate", "--checkpoint", ckpt, "-n", "3", "--steps", "2", "--max-frames", "120", "-q",
                   "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "level" in out and ", ".join(who) in out
    cal = json.loads(open(ckpt + ".json").read())["calibration"]
    assert cal["people"] == who and 0.9 <= cal["level"] <= 0.999 and cal["cross_person_coverage"] >= 0.9 or \
        cal["level"] == 0.999
    assert cal["fitted_coverage"] >= cal["level"] - 1 / 120  # a per-joint quantile of 120 rows
    load_checkpoint(ckpt)  # accepted


def test_radius_without_calibration_is_none():
    assert calibration.radius(np.ones((2, 17)), None) is None


def _block(scale, **kw):
    return {"spread_scale": scale, "coverage": 0.9, "factor": 2.0, "n_hyp": 10, **kw}


def test_person_correction_is_the_ratio_of_the_two_scales():
    clips = _block([0.0] + [1.0 + 0.1 * j for j in range(16)])
    people = _block([0.0] + [2.0 + 0.1 * j for j in range(16)], level=0.93, people=["a", "b"])
    f = calibration.person_correction(clips, people, 17)
    assert f[0] == 1.0 and len(f) == 17
    np.testing.assert_allclose(f[1:], [(2.0 + 0.1 * j) / (1.0 + 0.1 * j) for j in range(16)], atol=1e-4)
    for c, p, match in ((people, people, "held-out people"), (clips, clips, "not fitted by person"),
                        (clips, {**people, "n_hyp": 20}, "differ in n_hyp"), (None, people, "no calibration"),
                        (clips, {**people, "spread_scale": [1.0] * 16}, "spread_scale"),
                        ({**clips, "person_correction": {"factor": [1.0] * 17}}, people, "itself corrected")):
        with pytest.raises(calibration.CalibrationError, match=match):
            calibration.person_correction(c, p, 17)


def test_calibrate_with_a_person_correction(calibrated, tmp_path, capsys):
    """--person-correction CLIPS PEOPLE: the scale fitted on the checkpoint's own validation clips,
    times PEOPLE's scale / CLIPS's per joint, recorded (factor, from) and checked on load; refused
    with one line for a wrong pair or N."""
    train, _ = load_dataset("hdm05")
    who = sorted(set(train.subject.tolist()))[:2]
    people = _tiny(tmp_path / "people", {"name": "hdm05", "keypoints": "gt", "val_fraction": 0.0, "val_subjects": who,
                                         "val_frames": int(np.isin(train.subject, who).sum())})
    args = ["-n", "3", "--steps", "2", "--max-frames", "80", "-q", "--device", "cpu"]
    assert cli.main(["calibrate", "--checkpoint", people, *args]) == 0
    val_frames = len(split_validation(train, FRAC, 0)[1])
    target = _tiny(tmp_path / "target", {"name": "hdm05", "keypoints": "gt", "val_fraction": FRAC, "val_seed": 0,
                                         "val_frames": val_frames})
    assert cli.main(["calibrate", "--checkpoint", target, *args]) == 0
    plain = json.loads(open(target + ".json").read())["calibration"]
    assert cli.main(["calibrate", "--checkpoint", target, *args, "--person-correction", calibrated, people]) == 0
    assert "person correction" in capsys.readouterr().out
    cal = json.loads(open(target + ".json").read())["calibration"]
    want = calibration.person_correction(json.loads(open(calibrated + ".json").read())["calibration"],
                                         json.loads(open(people + ".json").read())["calibration"], 17)
    assert cal["person_correction"]["factor"] == want and cal["person_correction"]["from"] == ["tiny", "people"]
    np.testing.assert_allclose(cal["spread_scale"], np.asarray(plain["spread_scale"]) * want, atol=2e-4)
    assert "person correction" in cal["meaning"]
    load_checkpoint(target)  # accepted
    for pair, match in (([people, calibrated], "fitted on held-out people"), ([calibrated, calibrated], "by person"),
                        ([calibrated, str(tmp_path / "none")], "--person-correction")):
        rc = cli.main(["calibrate", "--checkpoint", target, *args, "--person-correction", *pair])
        err = capsys.readouterr().err
        assert rc != 0 and match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    rc = cli.main(["calibrate", "--checkpoint", target, "-n", "4", *args[2:], "--person-correction", calibrated, people])
    assert rc != 0 and "measured at N = 3" in capsys.readouterr().err
