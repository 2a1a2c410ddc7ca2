"""Lifted poses out: BVH (read back by the project's own BVH reader), CSV, `diffupose lift -o .bvh/.csv`
with --smooth, and `viz` to MP4. The lifted clip is a real one: the first test clip of the
embedded CMU set (detector-like 2D), lifted with the shipped checkpoint."""
import csv
import json

import numpy as np
import pytest

from diffupose import cli
from diffupose.data.mocap import euler_to_matrix, parse_bvh
from diffupose.export import (BVH_CHUNK, best_rotation, check_bvh_skeleton, csv_header, matrix_to_euler_zyx,
                              read_bvh_positions, swing, write_bvh, write_csv)
from diffupose.metrics import acceleration_error, mpjpe
from diffupose.skeleton import H36M16, H36M17, HUMANEVA15

FPS = 20.0  # the CMU set's frame rate
FRAMES = 120


def _random_rotations(rng, n):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
                     np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
                     np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], 1)


def _constant_bone_clip(skel, rng, F=40):
    """Random bone directions (some exactly opposite their T-pose ones), fixed lengths."""
    lengths = rng.uniform(0.05, 0.5, skel.num_joints)
    P = np.zeros((F, skel.num_joints, 3))
    for j, p in enumerate(skel.parents):
        if p >= 0:
            d = rng.normal(size=(F, 3))
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            d[0] = -P[0, p] / max(np.linalg.norm(P[0, p]), 1e-9) if p else [1.0, 0.0, 0.0]
            P[:, j] = P[:, p] + lengths[j] * d
    return P


# ---------------------------------------------------------------------------------------------
# the rotation pieces
# ---------------------------------------------------------------------------------------------
def test_euler_zyx_is_what_the_bvh_reader_composes():
    rng = np.random.default_rng(0)
    R = _random_rotations(rng, 500)
    lock = euler_to_matrix(np.deg2rad([[30.0, 90.0, 40.0], [-10.0, -90.0, 5.0]]), "ZYX", False)  # gimbal lock
    for M in (R, lock):
        back = euler_to_matrix(np.deg2rad(matrix_to_euler_zyx(M)), "ZYX", False)
        np.testing.assert_allclose(back, M, rtol=0, atol=1e-9)


def test_swing_and_best_rotation():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 3)), rng.normal(size=(200, 3))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    b[:3] = -a[:3]  # half a turn: no unique axis
    b[3] = a[3]
    R = swing(a, b)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", R, a), b, atol=1e-12)
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(R[3], np.eye(3), atol=1e-12)
    # the smallest rotation: its axis is perpendicular to both vectors
    axis = np.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], 1)[4:]
    assert np.abs((axis * a[4:]).sum(1)).max() < 1e-9
    rest = rng.normal(size=(3, 3))
    G = _random_rotations(rng, 50)
    np.testing.assert_allclose(best_rotation(rest, np.einsum("fij,kj->fki", G, rest)), G, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# BVH and CSV from arrays
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("skel", [H36M17, H36M16, HUMANEVA15], ids=lambda s: s.name)
def test_bvh_of_constant_bones_reads_back_exactly(tmp_path, skel):
    """Bones of constant length: the file holds the poses to its 6 decimals (< 1e-5 m)."""
    P = _constant_bone_clip(skel, np.random.default_rng(2))
    path = write_bvh(tmp_path / "c.bvh", P, skel.joints, skel.parents, fps=25.0)
    back, fps = read_bvh_positions(path, skel.joints)
    assert fps == pytest.approx(25.0) and back.shape == P.shape
    assert np.abs(back - P).max() < 1e-5
    bvh = parse_bvh(path)
    assert bvh.motion.shape == (40, 6 + 3 * (len(bvh.joints) - sum(not j.channels for j in bvh.joints) - 1))
    assert bvh.joints[0].name == "pelvis" and bvh.joints[0].channels[:3] == ("Xposition", "Yposition", "Zposition")


def test_bvh_is_y_up_in_centimetres_with_median_bones(tmp_path):
    """Camera y is down: the T-pose's head is above its pelvis (+Y); offsets are the median bone
    lengths in cm; the Euler angles are continuous over time (no 360-degree jumps)."""
    rng = np.random.default_rng(3)
    P = _constant_bone_clip(H36M17, rng, F=BVH_CHUNK + 50)  # two chunks: unwrapping runs across them
    scale = np.ones(len(P))
    scale[:10] = 1.5  # a few long frames do not move the median
    P = P * scale[:, None, None]
    path = write_bvh(tmp_path / "c.bvh", P, H36M17.joints, H36M17.parents, fps=20.0)
    bvh = parse_bvh(path)
    offsets = {j.name: j.offset for j in bvh.joints}
    knee = H36M17.index("r_knee")
    med = np.median(np.linalg.norm(P[:, knee] - P[:, H36M17.parents[knee]], axis=-1))
    np.testing.assert_allclose(offsets["r_knee"], [0.0, -100 * med, 0.0], atol=1e-5)
    assert offsets["head"][1] > 0 and offsets["l_shoulder"][0] > 0 and offsets["r_hip"][0] < 0
    rot = np.concatenate([bvh.motion[:, j.channel_start:j.channel_start + 3] for j in bvh.joints
                          if j.channels and j.parent >= 0], axis=1)
    steps = np.abs(np.diff(rot, axis=0))
    assert steps.max() < 180.0  # unwrapped; random poses still turn a lot from frame to frame
    back, _ = read_bvh_positions(path, H36M17.joints)
    assert np.abs(back[10:] - P[10:]).max() < 1e-5  # the frames whose bones are the medians
    assert np.abs(back[:10] - P[:10] / 1.5).max() < 1e-5  # the long ones come back at median length


def test_csv_columns(tmp_path):
    P = np.random.default_rng(4).normal(size=(5, 17, 3))
    path = write_csv(tmp_path / "p.csv", P, H36M17.joints, frame_index=[3, 4, 7, 8, 9],
                     unreliable=[False, True, False, False, False])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ["frame", "pelvis_x", "pelvis_y", "pelvis_z"] and rows[0][-1] == "unreliable"
    assert rows[0][-4:-1] == ["r_wrist_x", "r_wrist_y", "r_wrist_z"] and rows[0] == csv_header(H36M17.joints)
    vals = np.array(rows[1:], dtype=float)
    assert vals[:, 0].tolist() == [3, 4, 7, 8, 9] and vals[:, -1].tolist() == [0, 1, 0, 0, 0]
    np.testing.assert_allclose(vals[:, 1:-1].reshape(5, 17, 3), P, rtol=0, atol=5.1e-6)


def test_unknown_skeleton_is_refused():
    with pytest.raises(ValueError, match="tail"):
        check_bvh_skeleton(("pelvis", "tail"), (-1, 0))


# ---------------------------------------------------------------------------------------------
# from a lifted clip, through the command line
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cmu_clip(tmp_path_factory):
    """The first FRAMES frames of the first CMU test clip: 2D input (.npy) and 3D ground truth."""
    from diffupose.data.dataset import load_dataset
    from diffupose.evaluate import clip_labels

    _, test = load_dataset("cmu", keypoints="det")
    rows = np.flatnonzero(clip_labels(test) == clip_labels(test)[0])[:FRAMES]
    d = tmp_path_factory.mktemp("cmu")
    np.save(d / "kp.npy", test.pose2d[rows])
    return d, test.pose3d[rows]


def _lift(src, out, *extra):
    args = ["lift", str(src / "kp.npy"), "--layout", "h36m17", "--normalized", "-n", "5", "--steps", "5",
            "-q", "-o", str(out), *map(str, extra)]
    assert cli.main(args) == 0


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def lifted(cmu_clip):
    d, _ = cmu_clip
    _lift(d, d / "raw.npz")
    _lift(d, d / "smooth.npz", "--smooth", "oneeuro", "--fps", FPS)
    _lift(d, d / "poses.bvh", "--fps", FPS)
    _lift(d, d / "poses.csv")
    return d


def test_lifted_bvh_reads_back_within_the_stated_tolerance(lifted, cmu_clip):
    """The stated tolerance: each joint comes back where it was lifted up to the sum, over the bones
    from the root to it, of how far that bone's length in that frame is from its clip median;
    with the lengths set to the medians, exactly (1e-5 m)."""
    raw = _npz(lifted / "raw.npz")
    P = raw["pose3d"].astype(np.float64)
    back, fps = read_bvh_positions(lifted / "poses.bvh", H36M17.joints)
    assert fps == pytest.approx(FPS) and back.shape == P.shape
    parents = H36M17.parents
    length = np.linalg.norm(P - P[:, [max(p, 0) for p in parents]], axis=-1)
    med = np.median(length, axis=0)
    at_median = np.zeros_like(P)
    bound = np.zeros(P.shape[:2])
    for j, p in enumerate(parents):
        if p >= 0:
            at_median[:, j] = at_median[:, p] + (P[:, j] - P[:, p]) * (med[j] / length[:, j])[:, None]
            bound[:, j] = bound[:, p] + np.abs(length[:, j] - med[j])
    assert np.abs(back - at_median).max() < 1e-5
    err = np.linalg.norm(back - P, axis=-1)
    assert (err <= bound + 1e-5).all()
    assert 0 < err.mean() < 0.03  # a lifted clip's bones vary by a centimetre or two (README: 18 mm on a whole clip)


def test_lifted_csv_and_meta(lifted):
    raw = _npz(lifted / "raw.npz")
    with open(lifted / "poses.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == csv_header(H36M17.joints) and len(rows) == FRAMES + 1
    vals = np.array(rows[1:], dtype=float)
    np.testing.assert_allclose(vals[:, 1:-1].reshape(FRAMES, 17, 3), raw["pose3d"], rtol=0, atol=5.1e-6)
    assert (vals[:, 0] == raw["frame_index"]).all() and (vals[:, -1] == raw["unreliable"]).all()
    meta = json.loads(str(raw["meta"]))
    assert meta["settings"]["smooth"] == {"filter": "none"} and meta["settings"]["fps_source"] == "assumed"
    smooth = json.loads(str(_npz(lifted / "smooth.npz")["meta"]))["settings"]
    assert smooth["smooth"]["filter"] == "oneeuro" and smooth["fps"] == FPS and smooth["fps_source"] == "given"


def test_smoothing_a_lifted_clip_removes_jitter(lifted, cmu_clip):
    """Same seed, so the same hypotheses; the smoothed aggregate's acceleration error against the
    ground truth is lower and its MPJPE about the same (README: "Smooth video", the whole test set)."""
    _, gt = cmu_clip
    raw, smooth = _npz(lifted / "raw.npz"), _npz(lifted / "smooth.npz")
    np.testing.assert_array_equal(raw["hypotheses"], smooth["hypotheses"])
    assert not np.array_equal(raw["pose3d"], smooth["pose3d"])
    a_raw, a_smooth = acceleration_error(raw["pose3d"], gt), acceleration_error(smooth["pose3d"], gt)
    assert a_smooth < 0.7 * a_raw, (a_raw, a_smooth)
    assert mpjpe(smooth["pose3d"], gt) < mpjpe(raw["pose3d"], gt) + 3.0


def test_lift_export_errors_are_one_line(lifted, tmp_path, capsys):
    rc = cli.main(["lift", str(lifted / "kp.npy"), "--layout", "h36m17", "--normalized", "-o",
                   str(tmp_path / "p.bvh"), "--smooth", "oneeuro", "--smooth-beta", "-1"])
    assert rc == 2 and "--smooth-beta" in capsys.readouterr().err
    rc = cli.main(["lift", str(lifted / "kp.npy"), "-o", str(tmp_path / "p.fbx")])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and ".bvh" in err and ".csv" in err
    assert not list(tmp_path.iterdir())


def test_viz_mp4(lifted, tmp_path, capsys):
    from diffupose import viz

    if not viz.ffmpeg_available():
        pytest.skip("no ffmpeg: neither on PATH nor the imageio-ffmpeg package (pip install diffupose[video])")
    out = tmp_path / "clip.mp4"
    rc = cli.main(["viz", str(lifted / "raw.npz"), "-o", str(out), "--stop", "6", "--dpi", "40", "-q"])
    assert rc == 0, capsys.readouterr().err
    head = out.read_bytes()[:12]
    assert head[4:8] == b"ftyp" and out.stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
