"""Human3.6M loader on generated look-alike files (tests/fakes.py): values against an independent
computation, the joint reductions, labels, splits, and every malformed-input error."""
import json
import warnings

import numpy as np
import pytest

from diffupose.data import videopose3d as vp3d
from diffupose.data.cameras import load_cameras, save_cameras
from diffupose.data.dataset import load_dataset
from diffupose.data.h36m import ACTIONS, action_label
from diffupose.skeleton import H36M16, H36M17
from tests.fakes import expected_rows, fake_h36m, rows_of

# the 32 -> 17 reduction, written out as the task states it (not imported from the code under test)
KEEP_17 = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return fake_h36m(tmp_path_factory.mktemp("h36m"))


def test_values_match_an_independent_computation(fake):
    train, test = load_dataset("h36m", fake.data_dir, train_subjects=["S1", "S5"])
    assert train.skeleton is H36M17 and test.skeleton is H36M17
    assert set(train.subject) == {"S1", "S5"} and set(test.subject) == {"S9", "S11"}
    n_clip = {a: w.shape[0] for a, w in fake.world["S1"].items()}
    assert len(train) == 2 * 4 * sum(n_clip.values()) and len(test) == len(train)
    assert train.pose3d.dtype == np.float32 and train.pose2d.dtype == np.float32
    for ps, subject in ((train, "S5"), (test, "S11")):
        for action in fake.world[subject]:
            for c in range(4):
                x, y = expected_rows(fake, subject, action, c, KEEP_17)
                got3, got2, frames = rows_of(ps, subject, action, c)
                np.testing.assert_array_equal(frames, np.arange(len(x)))
                np.testing.assert_allclose(got3, x, atol=2e-6)
                np.testing.assert_allclose(got2, y, atol=2e-6)
    assert np.all(train.pose3d[:, 0] == 0)


def test_2d_and_3d_agree_through_the_camera(fake):
    """The 2D of each row is the projection of its 3D (plus the root) through the same camera:
    camera order and frame alignment are right."""
    _, test = load_dataset("h36m", fake.data_dir, train_subjects=["S1"])
    cam = fake.cameras["S9"][2]
    world = fake.world["S9"]["Walking 1"][:, KEEP_17].astype(np.float64)
    root_cam = cam.world_to_camera(world)[:, :1]
    got3, got2, _ = rows_of(test, "S9", "Walking 1", 2)
    px = cam.project(got3.astype(np.float64) + root_cam)
    np.testing.assert_allclose(cam.normalize(px), got2, atol=1e-4)


def test_labels_and_table_order(fake):
    train, _ = load_dataset("h36m", fake.data_dir, train_subjects=["S1"])
    assert dict(zip(train.clip, train.action)) == {"Walking 1": "Walking", "TakingPhoto": "Photo",
                                                   "SittingDown 2": "SittingDown"}
    assert train.actions() == ["Photo", "SittingDown", "Walking"]  # the paper's order, not sorted
    assert train.action_order == ACTIONS


@pytest.mark.parametrize("name,label", [("Walking 1", "Walking"), ("Walking", "Walking"), ("TakingPhoto 1", "Photo"),
                                        ("Photo", "Photo"), ("WalkingDog", "WalkDog"), ("WalkDog 1", "WalkDog"),
                                        ("WalkTogether 2", "WalkTogether"), ("SittingDown 2", "SittingDown"),
                                        ("Sitting 1", "Sitting"), ("Purchases", "Purchases"), ("Directions 1", "Directions")])
def test_action_label(name, label):
    assert action_label(name) == label


def test_action_label_unknown():
    with pytest.raises(ValueError, match="unknown Human3.6M action 'Dancing 1'"):
        action_label("Dancing 1")


def test_paper_action_order():
    assert ACTIONS == ("Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases",
                       "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether")


def test_hr_16_joints_drop_the_nose(tmp_path):
    fake = fake_h36m(tmp_path, subjects=("S1", "S9"), keypoints="hr")
    train, test = load_dataset("h36m", tmp_path, keypoints="hr", train_subjects=["S1"], test_subjects=["S9"])
    assert train.skeleton is H36M16 and train.pose3d.shape[1:] == (16, 3)
    keep16 = [j for i, j in enumerate(KEEP_17) if i != 9]
    x, y = expected_rows(fake, "S9", "TakingPhoto", 1, keep16)
    got3, got2, _ = rows_of(test, "S9", "TakingPhoto", 1)
    np.testing.assert_allclose(got3, x, atol=2e-6)
    np.testing.assert_allclose(got2, y, atol=2e-6)


def test_3d_already_reduced_to_17(tmp_path):
    fake = fake_h36m(tmp_path, subjects=("S1", "S9"), joints_3d=17)
    _, test = load_dataset("h36m", tmp_path, train_subjects=["S1"], test_subjects=["S9"])
    x, _ = expected_rows(fake, "S9", "Walking 1", 3, list(range(17)))
    np.testing.assert_allclose(rows_of(test, "S9", "Walking 1", 3)[0], x, atol=2e-6)


def test_downsample_and_keypoints_path(fake):
    full, _ = load_dataset("h36m", fake.data_dir, train_subjects=["S1"], test_subjects=["S9"])
    half, _ = load_dataset("h36m", fake.data_dir, keypoints=str(fake.paths["2d"]), train_subjects=["S1"],
                           test_subjects=["S9"], downsample=2)
    a, _, fa = rows_of(full, "S1", "SittingDown 2", 0)
    b, _, fb = rows_of(half, "S1", "SittingDown 2", 0)
    np.testing.assert_array_equal(fb, fa[::2])
    np.testing.assert_array_equal(b, a[::2])
    with pytest.raises(ValueError, match="downsample"):
        load_dataset("h36m", fake.data_dir, train_subjects=["S1"], test_subjects=["S9"], downsample=0)


# ---------------------------------------------------------------------------------------------
# errors: each names the file and what is wrong
# ---------------------------------------------------------------------------------------------
def _rewrite_2d(fake, tmp_path, edit, metadata=None):
    """A copy of the fake set whose 2D file is edited by `edit(positions_2d)`."""
    pos = {s: {a: [v.copy() for v in c] for a, c in acts.items()} for s, acts in fake.pixels.items()}
    edit(pos)
    vp3d.save_positions_3d(tmp_path / "data_3d_h36m.npz", fake.world)
    vp3d.save_positions_2d(tmp_path / "data_2d_h36m_gt.npz", pos,
                           metadata if metadata is not None else vp3d.metadata_for(H36M17, "h36m"))
    return tmp_path


def _load(d, **kw):
    kw.setdefault("train_subjects", ["S1"])
    kw.setdefault("test_subjects", ["S9"])
    return load_dataset("h36m", d, **kw)


def test_missing_files(tmp_path, fake):
    with pytest.raises(ValueError, match="data_dir is required"):
        load_dataset("h36m")
    with pytest.raises(FileNotFoundError, match="data directory not found"):
        load_dataset("h36m", tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="3D pose file not found: .*data_3d_h36m.npz"):
        _load(tmp_path)
    with pytest.raises(FileNotFoundError, match="2D keypoint file not found: .*data_2d_h36m_cpn_ft_h36m_dbb.npz"):
        _load(fake.data_dir, keypoints="cpn_ft_h36m_dbb")
    with pytest.raises(FileNotFoundError, match="camera file not found"):
        _load(fake.data_dir, cameras=tmp_path / "cams.json")
    with pytest.raises(ValueError, match="unknown dataset 'mpii'"):
        load_dataset("mpii", tmp_path)


def test_missing_key(tmp_path, fake):
    _rewrite_2d(fake, tmp_path, lambda p: None)
    np.savez(tmp_path / "data_3d_h36m.npz", poses=np.zeros(3))
    with pytest.raises(ValueError, match=r"data_3d_h36m.npz: missing key\(s\) \['positions_3d'\]"):
        _load(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "npy"])
def test_truncated_or_corrupt(tmp_path, fake, damage):
    _rewrite_2d(fake, tmp_path, lambda p: None)
    f = tmp_path / "data_2d_h36m_gt.npz"
    raw = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        f.write_bytes(raw[:200] + bytes(200) + raw[400:])  # the member's compressed data broken
    else:
        with open(f, "wb") as fh:
            np.save(fh, np.zeros(3))
    with pytest.raises(ValueError, match="data_2d_h36m_gt.npz: .*(truncated or corrupt|expected an .npz archive)"):
        _load(tmp_path)


def test_wrong_shapes(tmp_path, fake):
    def edit(p):
        p["S1"]["Walking 1"][2] = p["S1"]["Walking 1"][2][..., :1]

    _rewrite_2d(fake, tmp_path, edit)
    with pytest.raises(ValueError, match=r"positions_2d\['S1'\]\['Walking 1'\]\[2\] has shape \(\d+, 17, 1\)"):
        _load(tmp_path)
    world = {s: dict(a) for s, a in fake.world.items()}
    world["S9"]["TakingPhoto"] = world["S9"]["TakingPhoto"][:, :, 0]
    vp3d.save_positions_3d(tmp_path / "data_3d_h36m.npz", world)
    with pytest.raises(ValueError, match=r"data_3d_h36m.npz: positions_3d\['S9'\]\['TakingPhoto'\] has shape"):
        _load(tmp_path)


def test_not_a_dict(tmp_path, fake):
    _rewrite_2d(fake, tmp_path, lambda p: None)
    np.savez(tmp_path / "data_3d_h36m.npz", positions_3d=np.zeros((4, 32, 3)))
    with pytest.raises(ValueError, match="positions_3d is a ndarray, expected a dict"):
        _load(tmp_path)


def test_nan_rejected(tmp_path, fake):
    def edit(p):
        p["S9"]["Walking 1"][0][3, 4, 1] = np.nan

    _rewrite_2d(fake, tmp_path, edit)
    with pytest.raises(ValueError, match="NaN or infinite"):
        _load(tmp_path)


def test_action_in_2d_but_not_in_3d(tmp_path, fake):
    def edit(p):
        p["S1"]["Eating 1"] = p["S1"]["Walking 1"]

    _rewrite_2d(fake, tmp_path, edit)
    with pytest.raises(ValueError, match=r"data_2d_h36m_gt.npz: subject 'S1' action\(s\) \['Eating 1'\] are in the 2D file but not in the 3D"):
        _load(tmp_path)


def test_subject_missing(tmp_path, fake):
    _rewrite_2d(fake, tmp_path, lambda p: p.pop("S9"))
    with pytest.raises(ValueError, match="subject 'S9' is not in the 2D file"):
        _load(tmp_path)
    with pytest.raises(ValueError, match="subject 'S6' is not in the 3D file"):
        load_dataset("h36m", tmp_path)  # the default train subjects include S6


def test_clip_missing_from_2d_is_left_out_with_a_warning(tmp_path, fake):
    _rewrite_2d(fake, tmp_path, lambda p: p["S9"].pop("TakingPhoto"))
    with pytest.warns(UserWarning, match=r"left out: \['S9/TakingPhoto'\]"):
        _, test = _load(tmp_path)
    assert set(test.clip) == {"Walking 1", "SittingDown 2"}


def test_2d_shorter_than_3d(tmp_path, fake):
    def edit(p):
        p["S9"]["Walking 1"][1] = p["S9"]["Walking 1"][1][:5]

    _rewrite_2d(fake, tmp_path, edit)
    with pytest.raises(ValueError, match=r"positions_2d\['S9'\]\['Walking 1'\]\[1\] has 5 frames, fewer than the 12"):
        _load(tmp_path)


def test_camera_count(tmp_path, fake):
    _rewrite_2d(fake, tmp_path, lambda p: p["S1"]["TakingPhoto"].pop())
    with pytest.raises(ValueError, match=r"\['TakingPhoto'\] has 3 cameras; the camera file has 4"):
        _load(tmp_path)


def test_wrong_joint_count(tmp_path, fake):
    def edit(p):
        for acts in p.values():
            for a in acts:
                acts[a] = [v[:, :15] for v in acts[a]]

    _rewrite_2d(fake, tmp_path, edit, metadata={})
    with pytest.raises(ValueError, match="wrong joint count: .*data_2d_h36m_gt.npz has 15 joints"):
        _load(tmp_path)
    world = {s: {a: w[:, :20] for a, w in acts.items()} for s, acts in fake.world.items()}
    _rewrite_2d(fake, tmp_path, lambda p: None)
    vp3d.save_positions_3d(tmp_path / "data_3d_h36m.npz", world)
    with pytest.raises(ValueError, match="wrong joint count: .*data_3d_h36m.npz has 20 joints"):
        _load(tmp_path)


def test_metadata_checked(tmp_path, fake):
    _rewrite_2d(fake, tmp_path, lambda p: None, metadata={"layout_name": "h36m", "num_joints": 16})
    with pytest.raises(ValueError, match="metadata says num_joints=16 but the keypoints have 17"):
        _load(tmp_path)
    coco = {"layout_name": "coco", "num_joints": 17,
            "keypoints_symmetry": [[1, 3, 5, 7, 9, 11, 13, 15], [2, 4, 6, 8, 10, 12, 14, 16]]}
    _rewrite_2d(fake, tmp_path, lambda p: None, metadata=coco)
    with pytest.raises(ValueError, match="does not match the h36m17 joint order"):
        _load(tmp_path)


def test_unknown_action_in_3d(tmp_path, fake):
    world = {s: dict(a) for s, a in fake.world.items()}
    world["S1"]["Dancing"] = world["S1"]["Walking 1"]
    _rewrite_2d(fake, tmp_path, lambda p: None)
    vp3d.save_positions_3d(tmp_path / "data_3d_h36m.npz", world)
    with pytest.raises(ValueError, match="data_3d_h36m.npz: subject 'S1': unknown Human3.6M action 'Dancing'"):
        _load(tmp_path)


def test_camera_file_without_the_subject(tmp_path, fake):
    cams = load_cameras()
    path = tmp_path / "cams.json"
    save_cameras(path, {"S1": cams["S1"]})
    with pytest.raises(ValueError, match="camera file .*cams.json has no cameras for subject 'S9'"):
        _load(fake.data_dir, cameras=path)
    path.write_text(json.dumps({"intrinsics": []}))
    with pytest.raises(ValueError, match="missing or malformed field"):
        _load(fake.data_dir, cameras=path)


def test_no_warnings_on_a_good_set(fake):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load(fake.data_dir)
