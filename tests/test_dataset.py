"""PoseSet helpers and the embedded-CMU layout (on fakes: the real files may not exist yet)."""
import json

import numpy as np
import pytest

from diffupose.data import videopose3d as vp3d
from diffupose.data.dataset import CMU_ASSETS, PoseSet, load_dataset
from diffupose.skeleton import H36M17
from tests.fakes import expected_rows, fake_cmu, rows_of

KEEP_17 = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]


def small_set(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return PoseSet(pose3d=rng.normal(size=(n, 17, 3)), pose2d=rng.normal(size=(n, 17, 2)),
                   action=np.array(["Walking", "Eating", "Zumba"] * (n // 3)), subject=np.array(["S9"] * n),
                   camera=np.arange(n) % 4, skeleton=H36M17, action_order=("Eating", "Walking"))


def test_poseset_basics():
    ps = small_set()
    assert len(ps) == 6 and ps.pose3d.dtype == np.float32 and ps.camera.dtype == np.int64
    assert ps.actions() == ["Eating", "Walking", "Zumba"]  # table order, then the unknown ones sorted
    assert list(ps.clip) == list(ps.action) and list(ps.frame) == [-1] * 6
    sub = ps.subset(ps.action == "Walking")
    assert len(sub) == 2 and set(sub.action) == {"Walking"} and sub.skeleton is H36M17
    np.testing.assert_array_equal(sub.pose3d, ps.pose3d[[0, 3]])
    idx = ps.subset(np.array([5, 1]))
    np.testing.assert_array_equal(idx.pose2d, ps.pose2d[[5, 1]])
    np.testing.assert_array_equal(idx.camera, [1, 1])
    with pytest.raises(ValueError, match="boolean mask"):
        ps.subset(np.ones(5, bool))


def test_poseset_flipped():
    ps = small_set()
    f = ps.flipped()
    for l, r in zip(H36M17.joints_left, H36M17.joints_right):
        np.testing.assert_array_equal(f.pose3d[:, l, 0], -ps.pose3d[:, r, 0])
        np.testing.assert_array_equal(f.pose3d[:, l, 1:], ps.pose3d[:, r, 1:])
        np.testing.assert_array_equal(f.pose2d[:, r, 0], -ps.pose2d[:, l, 0])
        np.testing.assert_array_equal(f.pose2d[:, r, 1], ps.pose2d[:, l, 1])
    for j in (0, 7, 8, 9, 10):  # centre joints stay, mirrored
        np.testing.assert_array_equal(f.pose3d[:, j, 0], -ps.pose3d[:, j, 0])
    np.testing.assert_array_equal(f.flipped().pose3d, ps.pose3d)
    np.testing.assert_array_equal(f.action, ps.action)
    assert not np.shares_memory(f.pose3d, ps.pose3d)


def test_poseset_checks_shapes():
    ps = small_set()
    with pytest.raises(ValueError, match=r"pose3d has shape \(6, 16, 3\); expected \[N, 17, 3\]"):
        PoseSet(ps.pose3d[:, :16], ps.pose2d, ps.action, ps.subject, ps.camera, H36M17)
    with pytest.raises(ValueError, match="pose2d has shape"):
        PoseSet(ps.pose3d, ps.pose2d[:5], ps.action, ps.subject, ps.camera, H36M17)
    with pytest.raises(ValueError, match=r"action has shape \(5,\)"):
        PoseSet(ps.pose3d, ps.pose2d, ps.action[:5], ps.subject, ps.camera, H36M17)


# ---------------------------------------------------------------------------------------------
# cmu
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cmu(tmp_path_factory):
    return fake_cmu(tmp_path_factory.mktemp("cmu"))


def test_cmu_split_labels_values(cmu):
    train, test = load_dataset("cmu", cmu.data_dir)
    assert set(zip(train.subject, train.clip)) == {("07", "07_01"), ("07", "07_02"), ("86", "86_01")}
    assert set(zip(test.subject, test.clip)) == {("86", "86_02"), ("09", "09_01")}
    assert train.actions() == ["walk", "run"]  # the order of first appearance in action_labels
    assert dict(zip(test.clip, test.action)) == {"86_02": "walk", "09_01": "run"}
    assert set(test.camera) == {0, 1, 2, 3}
    for c in range(4):
        x, y = expected_rows(cmu, "86", "86_02", c, list(range(17)))
        got3, got2, _ = rows_of(test, "86", "86_02", c)
        np.testing.assert_allclose(got3, x, atol=2e-6)
        np.testing.assert_allclose(got2, y, atol=2e-6)


def test_cmu_detections_differ_from_gt(cmu):
    _, gt = load_dataset("cmu", cmu.data_dir)
    _, det = load_dataset("cmu", cmu.data_dir, keypoints="det")
    np.testing.assert_array_equal(gt.pose3d, det.pose3d)
    noise = np.abs(gt.pose2d - det.pose2d).mean() * 1000 / 2  # normalised -> ~pixels (res_w = 1000)
    assert 1.0 < noise < 10.0


def test_cmu_subject_override(cmu):
    train, test = load_dataset("cmu", cmu.data_dir, train_subjects=["86"], test_subjects=["07"])
    assert set(train.clip) == {"86_01"}  # split.json lists 86 in train: its train clips only
    assert set(test.clip) == {"07_01", "07_02"}  # 07 is not in the test part: all its clips


def test_cmu_without_labels_and_32_joints(tmp_path):
    fake = fake_cmu(tmp_path, action_labels={}, joints_3d=32)
    split = json.loads((tmp_path / "split.json").read_text())
    del split["action_labels"]
    (tmp_path / "split.json").write_text(json.dumps(split))
    train, test = load_dataset("cmu", tmp_path)
    assert train.actions() == ["07_01", "07_02", "86_01"]  # the clip names, sorted
    x, _ = expected_rows(fake, "09", "09_01", 1, KEEP_17)
    np.testing.assert_allclose(rows_of(test, "09", "09_01", 1)[0], x, atol=2e-6)


def test_cmu_errors(cmu, tmp_path):
    with pytest.raises(FileNotFoundError, match="split file not found"):
        load_dataset("cmu", tmp_path)
    (tmp_path / "split.json").write_text(json.dumps({"train": ["07"], "test": {}}))
    with pytest.raises(ValueError, match="'train' must map subject -> \\[actions...\\]"):
        load_dataset("cmu", tmp_path)
    (tmp_path / "split.json").write_text(json.dumps({"train": {"07": ["07_01"]}, "test": {"86": ["86_02"]}}))
    with pytest.raises(FileNotFoundError, match="3D pose file not found: .*data_3d_cmu.npz"):
        load_dataset("cmu", tmp_path)
    vp3d.save_positions_3d(tmp_path / "data_3d_cmu.npz", {"S1": cmu.world["07"]})
    vp3d.save_positions_2d(tmp_path / "data_2d_cmu_gt.npz", {"S1": cmu.pixels["07"]}, {})
    with pytest.raises(ValueError, match="has no cameras for subject 'S1'"):
        load_dataset("cmu", tmp_path, cameras=cmu.paths["cameras"], train_subjects=["S1"], test_subjects=["S1"])


@pytest.mark.skipif(not (CMU_ASSETS / "split.json").is_file(), reason="the embedded CMU set is not built in this tree")
@pytest.mark.parametrize("keypoints", ["gt", "det"])
def test_embedded_cmu_set(keypoints):
    train, test = load_dataset("cmu", keypoints=keypoints)
    for ps in (train, test):
        assert len(ps) > 0 and ps.skeleton is H36M17
        assert np.all(ps.pose3d[:, 0] == 0) and np.isfinite(ps.pose2d).all()
        assert np.abs(ps.pose2d).max() < 3  # screen-normalised, not pixels
        assert 0.05 < np.linalg.norm(ps.pose3d, axis=-1).max() < 2.5  # metres
    assert not set(zip(train.subject, train.clip)) & set(zip(test.subject, test.clip))


def test_embedded_cmu_set_missing(tmp_path, monkeypatch):
    import diffupose.data.dataset as ds

    monkeypatch.setattr(ds, "ASSETS", tmp_path)
    with pytest.raises(FileNotFoundError, match="embedded CMU set is missing"):
        load_dataset("cmu")


def test_split_validation_takes_whole_clips():
    from diffupose.data.dataset import split_validation

    n = 60
    ps = small_set(n)
    ps = PoseSet(pose3d=ps.pose3d, pose2d=ps.pose2d, action=ps.action, subject=np.array(["S1", "S2"] * (n // 2)),
                 camera=np.arange(n) % 4, skeleton=H36M17, clip=np.array([f"c{i % 7}" for i in range(n)]))
    train, val = split_validation(ps, 0.2)
    assert len(train) + len(val) == n and len(val) >= 0.2 * n
    keys = lambda p: set(zip(p.subject.tolist(), p.clip.tolist()))  # noqa: E731
    assert keys(train).isdisjoint(keys(val)) and len(keys(val)) < len(keys(ps))
    again = split_validation(ps, 0.2)[1]
    np.testing.assert_array_equal(again.pose3d, val.pose3d)  # stable
    assert len(split_validation(ps, 0.0)[1]) == 0
    with pytest.raises(ValueError, match="validation fraction"):
        split_validation(ps, 0.6)


def test_split_validation_subjects_takes_whole_people():
    from diffupose.data.dataset import split_validation_subjects

    n = 60
    ps = small_set(n)
    ps = PoseSet(pose3d=ps.pose3d, pose2d=ps.pose2d, action=ps.action,
                 subject=np.array(["S1", "S2", "S3"] * (n // 3)), camera=np.arange(n) % 4, skeleton=H36M17,
                 clip=np.array([f"c{i % 7}" for i in range(n)]))
    train, val = split_validation_subjects(ps, ["S2"])
    assert set(val.subject.tolist()) == {"S2"} and "S2" not in set(train.subject.tolist())
    assert len(train) + len(val) == n and len(val) == n // 3
    with pytest.raises(ValueError, match="not among the training people"):
        split_validation_subjects(ps, ["S9"])
    with pytest.raises(ValueError, match="nothing to train on"):
        split_validation_subjects(ps, ["S1", "S2", "S3"])
