"""The embedded HDM05 set: its split rule, its files (layout, licence beside them, a rebuild gives
the same bytes) and the cmu+hdm05 union."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from diffupose.data.build_hdm05 import (DEFAULT_OUT, DEFAULT_SOURCE, HDM05_TEST_ACTORS, class_label, clip_class,
                                        hdm05_split)
from diffupose.data.dataset import concat_posesets, load_dataset
from diffupose.skeleton import get_skeleton
from tests.test_mocap import _check_layout, _load

HDM05 = Path(DEFAULT_OUT)
built = pytest.mark.skipif(not (HDM05 / "split.json").is_file(), reason="the embedded HDM05 set is not built")


def _name(actor, cls, take):
    return f"HDM_{actor}_{cls}_{take:03d}_120"


def test_split_rule():
    frames = {"bd": {_name("bd", "squat1Reps", t): 10 for t in (1, 2, 3)} | {_name("bd", "sneak2StepsLStart", t): 5
                                                                          for t in (1, 2)},
              "mm": {_name("mm", "squat1Reps", 1): 7}}
    split = hdm05_split(frames)
    # the last of three takes is held out; a class with two takes stays in train; mm is test only
    assert split["test"] == {"bd": [_name("bd", "squat1Reps", 3)], "mm": [_name("mm", "squat1Reps", 1)]}
    assert sorted(split["train"]["bd"]) == sorted([_name("bd", "squat1Reps", 1), _name("bd", "squat1Reps", 2),
                                                   _name("bd", "sneak2StepsLStart", 1),
                                                   _name("bd", "sneak2StepsLStart", 2)])
    assert split["action_labels"][_name("bd", "sneak2StepsLStart", 2)] == "sneak"
    assert clip_class(_name("tr", "kickLFront1Reps", 12)) == ("kickLFront1Reps", 12)
    with pytest.raises(ValueError, match="is not named HDM_"):
        clip_class("01_01")
    with pytest.raises(ValueError, match="no activity label"):
        class_label("cartwheel")


@built
def test_embedded_hdm05_set():
    size = sum(p.stat().st_size for p in HDM05.iterdir() if p.is_file())
    assert size <= 10_000_000, size
    readme = (HDM05 / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "Müller" in readme and "CG-2007-2" in readme
    d3 = _load(HDM05 / "data_3d_hdm05.npz")["positions_3d"]
    frames = {s: {a: len(x) for a, x in acts.items()} for s, acts in d3.items()}
    assert sorted(frames) == ["bd", "bk", "dg", "mm", "tr"]
    _check_layout(HDM05, "hdm05", frames)
    split = json.loads((HDM05 / "split.json").read_text())
    assert split == hdm05_split(frames)
    listed = [(s, a) for part in ("train", "test") for s, acts in split[part].items() for a in acts]
    assert sorted(listed) == sorted((s, a) for s, acts in frames.items() for a in acts)
    assert not set(HDM05_TEST_ACTORS) & set(split["train"])
    for s in split["train"]:  # every held-out take of a training actor has a same-label take in train
        train_labels = {split["action_labels"][a] for a in split["train"][s]}
        assert split["test"][s] and all(split["action_labels"][a] in train_labels for a in split["test"][s])


@built
@pytest.mark.skipif(not DEFAULT_SOURCE.is_dir(), reason="the HDM05 source files are not on this machine")
def test_rebuild_gives_the_same_bytes(tmp_path):
    r = subprocess.run([sys.executable, "-m", "diffupose.data.build_hdm05", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "train 6200, test 5814" in r.stdout
    for p in tmp_path.iterdir():
        assert p.read_bytes() == (HDM05 / p.name).read_bytes(), p.name


def test_build_refuses_a_folder_without_actors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "diffupose.data.build_hdm05", "--source", str(tmp_path), "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith("build_hdm05: error: ") and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


@built
def test_union_with_cmu():
    train, test = load_dataset("cmu+hdm05", keypoints="det")
    cmu_train, cmu_test = load_dataset("cmu", keypoints="det")
    h_train, h_test = load_dataset("hdm05", keypoints="det")
    assert len(train) == len(cmu_train) + len(h_train) and len(test) == len(cmu_test) + len(h_test)
    np.testing.assert_array_equal(test.pose2d[:len(cmu_test)], cmu_test.pose2d)
    np.testing.assert_array_equal(test.pose3d[len(cmu_test):], h_test.pose3d)
    assert set(test.subject.tolist()) == {"S01", "S02", "S03", "S131", "bd", "bk", "dg", "mm", "tr"}
    assert test.actions()[:len(cmu_test.actions())] == cmu_test.actions()
    assert np.all(h_train.pose3d[:, 0] == 0) and 0.05 < np.linalg.norm(h_train.pose3d, axis=-1).max() < 2.5
    with pytest.raises(ValueError, match="union of the embedded sets"):
        load_dataset("cmu+hdm05", data_dir="/tmp")
    with pytest.raises(ValueError, match="skeletons differ"):
        concat_posesets([cmu_test, replace(cmu_test.subset(np.arange(2)), pose3d=np.zeros((2, 16, 3)),
                                           pose2d=np.zeros((2, 16, 2)), skeleton=get_skeleton("h36m16"))])
