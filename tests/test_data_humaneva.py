"""HumanEva-I loader on generated look-alike files: values, shared cameras of Train/ and
Validate/ subjects, the Walk/Jog/Box protocol, and the required cameras file."""
import numpy as np
import pytest

from diffupose.data import videopose3d as vp3d
from diffupose.data.cameras import load_cameras, save_cameras
from diffupose.data.dataset import load_dataset
from diffupose.data.humaneva import action_label
from diffupose.skeleton import HUMANEVA15
from tests.fakes import expected_rows, fake_humaneva, rows_of


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return fake_humaneva(tmp_path_factory.mktemp("humaneva"))


def _load(fake, **kw):
    return load_dataset("humaneva", fake.data_dir, cameras=fake.paths["cameras"], **kw)


def test_values_and_protocol(fake):
    train, test = _load(fake)
    assert train.skeleton is HUMANEVA15 and train.pose3d.shape[1:] == (15, 3) and train.pose2d.shape[1:] == (15, 2)
    assert set(train.subject) == {"Train/S1", "Train/S2", "Train/S3"}
    assert set(test.subject) == {"Validate/S1", "Validate/S2", "Validate/S3"}
    # Gestures is outside the protocol; labels have trial and chunk stripped, in Walk, Jog, Box order
    assert set(test.clip) == {"Walk 1 chunk0", "Jog 1 chunk0", "Box 1 chunk0"}
    assert test.actions() == ["Walk", "Jog", "Box"]
    assert dict(zip(test.clip, test.action)) == {"Walk 1 chunk0": "Walk", "Jog 1 chunk0": "Jog", "Box 1 chunk0": "Box"}
    assert set(test.camera) == {0, 1, 2}
    frames = sum(fake.world["Validate/S2"][a].shape[0] for a in ("Walk 1 chunk0", "Jog 1 chunk0", "Box 1 chunk0"))
    assert len(test) == 3 * 3 * frames
    for ps, subject in ((train, "Train/S3"), (test, "Validate/S2")):
        for action in ("Walk 1 chunk0", "Box 1 chunk0"):
            for c in range(3):
                x, y = expected_rows(fake, subject, action, c, list(range(15)))
                got3, got2, _ = rows_of(ps, subject, action, c)
                np.testing.assert_allclose(got3, x, atol=2e-6)
                np.testing.assert_allclose(got2, y, atol=2e-6)


def test_train_and_validate_share_the_subjects_cameras(fake):
    cams = load_cameras(fake.paths["cameras"])
    assert set(cams) == {"S1", "S2", "S3"}
    for c in range(3):
        assert fake.cameras["Validate/S2"][c].translation.tolist() == cams["S2"][c].translation.tolist()
        assert fake.cameras["Train/S2"][c].translation.tolist() == cams["S2"][c].translation.tolist()


@pytest.mark.parametrize("name,label", [("Walk 1 chunk0", "Walk"), ("Jog 3 chunk2", "Jog"), ("Box 1 chunk0", "Box"),
                                        ("Walking 1", "Walk"), ("Gestures 1 chunk0", None), ("ThrowCatch 1", None)])
def test_action_label(name, label):
    assert action_label(name) == label


def test_cameras_required(fake):
    with pytest.raises(ValueError, match="HumanEva needs its camera parameters.*--cameras"):
        load_dataset("humaneva", fake.data_dir)
    with pytest.raises(FileNotFoundError, match="camera file not found"):
        load_dataset("humaneva", fake.data_dir, cameras=fake.data_dir / "missing.json")


def test_camera_file_without_the_subject(fake, tmp_path):
    cams = load_cameras(fake.paths["cameras"])
    path = tmp_path / "cams.json"
    save_cameras(path, {"S1": cams["S1"], "S2": cams["S2"]})
    with pytest.raises(ValueError, match="has no cameras for subject 'Train/S3'"):
        load_dataset("humaneva", fake.data_dir, cameras=path)


def test_subject_override_and_downsample(fake):
    train, test = _load(fake, train_subjects=["Train/S1"], test_subjects=["Validate/S3"], downsample=3)
    assert set(train.subject) == {"Train/S1"} and set(test.subject) == {"Validate/S3"}
    assert set(test.frame.tolist()) == set(range(0, fake.world["Validate/S3"]["Box 1 chunk0"].shape[0], 3))


def test_wrong_joint_count(fake, tmp_path):
    pos = {s: {a: [v[:, :14] for v in c] for a, c in acts.items()} for s, acts in fake.pixels.items()}
    vp3d.save_positions_3d(tmp_path / "data_3d_humaneva15.npz", fake.world)
    vp3d.save_positions_2d(tmp_path / "data_2d_humaneva15_gt.npz", pos, {})
    with pytest.raises(ValueError, match="wrong joint count: .*data_2d_humaneva15_gt.npz has 14 joints; humaneva supports"):
        load_dataset("humaneva", tmp_path, cameras=fake.paths["cameras"])


def test_missing_3d(fake, tmp_path):
    with pytest.raises(FileNotFoundError, match="HumanEva 3D pose file not found: .*data_3d_humaneva15.npz"):
        load_dataset("humaneva", tmp_path, cameras=fake.paths["cameras"])


def test_no_protocol_clips(fake, tmp_path):
    world = {s: {"Gestures 1 chunk0": acts["Gestures 1 chunk0"]} for s, acts in fake.world.items()}
    pos = {s: {"Gestures 1 chunk0": acts["Gestures 1 chunk0"]} for s, acts in fake.pixels.items()}
    vp3d.save_positions_3d(tmp_path / "data_3d_humaneva15.npz", world)
    vp3d.save_positions_2d(tmp_path / "data_2d_humaneva15_gt.npz", pos, vp3d.metadata_for(HUMANEVA15))
    with pytest.raises(ValueError, match="have no Walk, Jog or Box clips"):
        load_dataset("humaneva", tmp_path, cameras=fake.paths["cameras"])
