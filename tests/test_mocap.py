"""Mocap importer: ASF/AMC and BVH parsing and forward kinematics (synthetic cases with answers
worked by hand, and the real CMU files), the H36M17 mapping, virtual cameras, detector noise,
the VideoPose3D-layout output, the embedded set, and errors on malformed files."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from diffupose.data import mocap as M
from diffupose.data import virtual_cameras as V
from diffupose.data.build_cmu import (CMU_ACTION_LABELS, DEFAULT_OUT, METADATA, import_mocap, main as build_main)
from diffupose.data.cameras import load_cameras, qrot, world_to_camera
from diffupose.skeleton import H36M17

SOURCE = Path(os.environ.get("DIFFUPOSE_CMU_SOURCE", "/work/shared/data/cmu-mocap"))
needs_source = pytest.mark.skipif(not (SOURCE / "asfamc").is_dir(), reason=f"CMU mocap files not at {SOURCE}")
J = {n: i for i, n in enumerate(H36M17.joints)}
UP = np.array([0.0, 0.0, 1.0])


# ---------------------------------------------------------------------------------------------
# rotations and conventions, with answers worked by hand
# ---------------------------------------------------------------------------------------------
def test_axis_rotations_are_right_handed():
    q = np.pi / 2
    np.testing.assert_allclose(M.axis_rotation("Z", q) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(M.axis_rotation("X", q) @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(M.axis_rotation("Y", q) @ [0, 0, 1], [1, 0, 0], atol=1e-12)


def test_euler_order_conventions():
    a = np.radians([90.0, 90.0])
    y = np.array([0.0, 1.0, 0.0])
    # Acclaim "XZ": X acts first: Rx(90) y = z, then Rz(90) z = z.
    np.testing.assert_allclose(M.euler_to_matrix(a, "XZ", True) @ y, [0, 0, 1], atol=1e-12)
    # BVH "Zrotation Xrotation": Rz Rx, the same product.
    np.testing.assert_allclose(M.euler_to_matrix(a, "ZX", False) @ y, [0, 0, 1], atol=1e-12)
    # The other order gives another answer (so the tests above can tell them apart).
    np.testing.assert_allclose(M.euler_to_matrix(a, "ZX", True) @ y, [-1, 0, 0], atol=1e-12)


def test_y_up_to_z_up_is_a_proper_rotation():
    R = M.Y_UP_TO_Z_UP
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-15)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(M.y_up_to_z_up(np.array([0.0, 1.0, 0.0])), [0, 0, 1])  # up stays up


SYNTH_ASF = """\
# a synthetic skeleton: one unit = 1 m
:version 1.10
:name test
:units
  mass 1.0
  length 0.0254
  angle deg
:root
   order TX TY TZ RX RY RZ
   axis XYZ
   position 0 0 0
   orientation 0 0 0
:bonedata
  begin
     id 1
     name a
     direction 0 1 0
     length 1
     axis 0 0 0 XYZ
    dof rx rz
    limits (-180 180)
           (-180 180)
  end
  begin
     id 2
     name b
     direction 0 0 1
     length 2
     axis 0 0 90 XYZ
    dof rx
  end
:hierarchy
  begin
    root a b
  end
"""
SYNTH_AMC = """\
:FULLY-SPECIFIED
:DEGREES
1
root 1 2 3 0 0 0
a 90 90
b 90
2
root 0 0 0 0 90 0
a 90 90
b 0
"""


def test_asf_amc_forward_kinematics_by_hand(tmp_path):
    (tmp_path / "t.asf").write_text(SYNTH_ASF)
    (tmp_path / "t_01.amc").write_text(SYNTH_AMC)
    skel = M.parse_asf(tmp_path / "t.asf")
    assert skel.metres_per_unit == pytest.approx(1.0)
    pts = M.asf_amc_fk(skel, M.parse_amc(tmp_path / "t_01.amc", skel))
    # Frame 1: root at (1, 2, 3). a: Rx(90) then Rz(90) on (0, 1, 0) -> (0, 0, 1).
    # b: axis Rz(90) makes its local x the world y; rx 90 turns (0, 0, 1) about y -> (1, 0, 0).
    np.testing.assert_allclose(pts["root"][0], [1, 2, 3], atol=1e-12)
    np.testing.assert_allclose(pts["a"][0], [1, 2, 4], atol=1e-12)
    np.testing.assert_allclose(pts["b"][0], [3, 2, 3], atol=1e-12)
    # Frame 2: the root's ry 90 turns a's (0, 0, 1) to (1, 0, 0) and b's rest (0, 0, 2) to (2, 0, 0).
    np.testing.assert_allclose(pts["a"][1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(pts["b"][1], [2, 0, 0], atol=1e-12)
    # Z up: (x, y, z) -> (x, -z, y).
    np.testing.assert_allclose(M.y_up_to_z_up(pts["a"][0]), [1, -4, 2], atol=1e-12)


SYNTH_BVH = """\
HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT A
  {
    OFFSET 0 1 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 1 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.0083333
1 2 3 0 0 0 90 90 0
0 0 0 90 0 0 0 0 0
"""


def test_bvh_forward_kinematics_by_hand(tmp_path):
    p = tmp_path / "t.bvh"
    p.write_text(SYNTH_BVH)
    bvh = M.parse_bvh(p)
    assert bvh.fps == pytest.approx(120.0, rel=1e-4)
    pts = M.bvh_fk(bvh)
    # Frame 1: A at (1, 3, 3); its rotation Rz(90) Rx(90) takes the end offset (0, 1, 0) to (0, 0, 1).
    np.testing.assert_allclose(pts["A"][0], [1, 3, 3], atol=1e-12)
    np.testing.assert_allclose(pts["A_end"][0], [1, 3, 4], atol=1e-12)
    # Frame 2: the root's Zrotation 90 takes (0, 1, 0) to (-1, 0, 0) for both offsets.
    np.testing.assert_allclose(pts["A"][1], [-1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(pts["A_end"][1], [-2, 0, 0], atol=1e-12)


# ---------------------------------------------------------------------------------------------
# the real CMU files
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips():
    if not (SOURCE / "asfamc").is_dir():
        pytest.skip(f"CMU mocap files not at {SOURCE}")
    a = SOURCE / "asfamc"
    return {
        "02_01": M.load_clip(a / "02" / "02_01.amc"),  # walk, 343 frames
        "03_01": M.load_clip(a / "03" / "03_01.amc"),  # walk on uneven terrain, 432 frames
        "01_01": M.load_clip(a / "01" / "01_01.amc", step=4),  # playground jumps
        "131_01": M.load_clip(SOURCE / "bvh" / "131_01.bvh"),  # start-walk-stop
    }


def _toe_tips(clip: M.MocapClip) -> tuple[np.ndarray, np.ndarray]:
    if "ltoes" in clip.joints:
        return clip.joints["ltoes"], clip.joints["rtoes"]
    return clip.joints["LeftToe_end"], clip.joints["RightToe_end"]


def _forward(clip: M.MocapClip) -> np.ndarray:
    """[F, 3] horizontal facing direction from the feet (ankle -> toe tip), independent of the
    left/right labels."""
    lt, rt = _toe_tips(clip)
    P = clip.h36m17
    f = (lt - P[:, J["l_ankle"]]) + (rt - P[:, J["r_ankle"]])
    f[:, 2] = 0
    return f / np.linalg.norm(f, axis=-1, keepdims=True)


RIGID = [("pelvis", "r_hip"), ("pelvis", "l_hip"), ("r_hip", "r_knee"), ("l_hip", "l_knee"),
         ("r_knee", "r_ankle"), ("l_knee", "l_ankle"), ("l_shoulder", "l_elbow"), ("r_shoulder", "r_elbow"),
         ("l_elbow", "l_wrist"), ("r_elbow", "r_wrist")]


def test_real_bone_lengths_constant(clips):
    for name, c in clips.items():
        assert c.h36m17.shape == (c.num_frames, 17, 3) and np.isfinite(c.h36m17).all(), name
        # Every segment of the full skeleton is rigid.
        for child, par in c.parents.items():
            L = np.linalg.norm(c.joints[child] - c.joints[par], axis=-1)
            assert L.std() <= 1e-9 + 1e-9 * L.mean(), (name, child, L.std())
        # The H36M17 segments that are one mocap bone are rigid; all are nearly so.
        for a, b in RIGID:
            L = np.linalg.norm(c.h36m17[:, J[a]] - c.h36m17[:, J[b]], axis=-1)
            assert L.std() / L.mean() < 1e-9, (name, a, b)
        L = M.bone_lengths(c.h36m17)
        assert (L.std(0) / L.mean(0)).max() < 0.05, name


def test_real_proportions(clips):
    for name, c in clips.items():
        P = c.h36m17
        femur = np.linalg.norm(P[:, J["l_hip"]] - P[:, J["l_knee"]], axis=-1).mean()
        tibia = np.linalg.norm(P[:, J["l_knee"]] - P[:, J["l_ankle"]], axis=-1).mean()
        upper_arm = np.linalg.norm(P[:, J["l_shoulder"]] - P[:, J["l_elbow"]], axis=-1).mean()
        hips = np.linalg.norm(P[:, J["l_hip"]] - P[:, J["r_hip"]], axis=-1).mean()
        assert 0.35 <= femur <= 0.5 and 0.33 <= tibia <= 0.5, (name, femur, tibia)
        assert 0.22 <= upper_arm <= 0.36 and 0.12 <= hips <= 0.3, (name, upper_arm, hips)
        # Stature in the first (standing) frame: top of the head over the lowest toe tip.
        lt, rt = _toe_tips(c)
        height = P[0, J["head"], 2] - min(lt[0, 2], rt[0, 2])
        # The BVH conversion of subject 131 lacks the ASF's thorax segment (its lowerneck sits
        # on Chest2 with a zero offset), so its trunk reads ~11 cm short; see the assets README.
        lo = 1.5 if "ltoes" in c.joints else 1.4
        assert lo <= height <= 1.95, (name, height)


def test_real_ground_and_upright(clips):
    for name in ("02_01", "131_01"):  # walks on a flat floor
        c = clips[name]
        P = c.h36m17
        lt, rt = _toe_tips(c)
        # One foot is always on the floor (Z = 0): the lower ankle joint is a few cm above it.
        low_ankle = np.minimum(P[:, J["l_ankle"], 2], P[:, J["r_ankle"], 2])
        assert low_ankle.min() > 0.02 and low_ankle.max() < 0.2, (name, low_ankle.min(), low_ankle.max())
        assert -0.05 < min(lt[0, 2], rt[0, 2]) < 0.08, name
        # Upright: the head well above the pelvis when standing (frame 0) and above it always,
        # the pelvis near hip height. (131_01 kneels on its left knee for ~0.8 s, bending forward.)
        assert P[0, J["head"], 2] - P[0, J["pelvis"], 2] > 0.45, name
        assert (P[:, J["head"], 2] - P[:, J["pelvis"], 2]).min() > 0.25, name
        assert 0.8 < P[0, J["pelvis"], 2] < 1.15, name
        # Standing on both feet (pelvis up, both ankles low), the leg joints are ordered top to
        # bottom. (131_01 also lifts its right knee above the hip once.)
        up = (P[:, J["pelvis"], 2] > 0.85) & (P[:, J["l_ankle"], 2] < 0.2) & (P[:, J["r_ankle"], 2] < 0.2)
        assert up.mean() > 0.2, name
        for side in ("l", "r"):
            hip, knee, ankle = (P[up, J[f"{side}_{k}"], 2] for k in ("hip", "knee", "ankle"))
            assert (hip > knee + 0.15).all() and (knee > ankle + 0.05).all(), (name, side)


def test_real_left_is_left_and_knees_bend_forward(clips):
    for name, c in clips.items():
        P = c.h36m17
        fwd = _forward(c)
        left = np.cross(UP, fwd)  # x forward, y left, z up
        hip_side = np.einsum("fi,fi->f", P[:, J["l_hip"]] - P[:, J["r_hip"]], left)
        shoulder_side = np.einsum("fi,fi->f", P[:, J["l_shoulder"]] - P[:, J["r_shoulder"]], left)
        assert (hip_side > 0).mean() > 0.97, (name, (hip_side > 0).mean())
        assert (shoulder_side > 0).mean() > 0.9, (name, (shoulder_side > 0).mean())
        for side in ("l", "r"):
            hip, knee, ankle = (P[:, J[f"{side}_{k}"]] for k in ("hip", "knee", "ankle"))
            u, v = ankle - hip, knee - hip
            off_line = v - (np.einsum("fi,fi->f", u, v) / np.einsum("fi,fi->f", u, u))[:, None] * u
            bent = np.linalg.norm(off_line, axis=-1) > 0.05  # knee clearly bent
            ahead = np.einsum("fi,fi->f", off_line, fwd) > 0
            if bent.sum() > 5:
                assert ahead[bent].mean() > 0.9, (name, side, ahead[bent].mean())


def test_bvh_scale_is_guessed_from_the_rest_height():
    if not (SOURCE / "bvh").is_dir():
        pytest.skip(f"CMU mocap files not at {SOURCE}")
    bvh = M.parse_bvh(SOURCE / "bvh" / "131_03.bvh")
    unit, scale = M.guess_bvh_scale(bvh)
    assert unit == "cmu_asf" and scale == pytest.approx(0.0254 / 0.45)
    # The same hierarchy in centimetres is read as centimetres.
    cm = M.BvhFile(bvh.path, [M.BvhJoint(j.name, j.parent, j.offset * scale * 100, j.channels,
                                         j.channel_start, j.line) for j in bvh.joints],
                   bvh.frame_time, bvh.motion)
    assert M.guess_bvh_scale(cm)[0] == "cm"


# ---------------------------------------------------------------------------------------------
# cameras and 2D
# ---------------------------------------------------------------------------------------------
def test_look_at_matches_h36m_cameras():
    for cam in load_cameras()["S1"]:
        fwd = qrot(cam.orientation, np.array([0.0, 0.0, 1.0]))
        t = cam.translation
        target = t + 3.0 * fwd
        q = V.look_at(t, target)
        # Same optical axis, and the image's down axis points down within a few degrees of roll.
        np.testing.assert_allclose(qrot(q, np.array([0.0, 0.0, 1.0])), fwd, atol=1e-9)
        down_h36m = qrot(cam.orientation, np.array([0.0, 1.0, 0.0]))
        down = qrot(q, np.array([0.0, 1.0, 0.0]))
        assert np.degrees(np.arccos(np.clip(down @ down_h36m, -1, 1))) < 5.0


def test_rig_sees_the_subject(clips):
    X = clips["02_01"].h36m17
    cams = V.place_rig(X.reshape(-1, 3), "S02", seed=0)
    assert len(cams) == 4
    centre = X[:, 0].mean(0)
    azimuths = []
    for cam in cams:
        d = np.linalg.norm(cam.translation[:2] - centre[:2])
        assert 4.0 <= d <= 12.0 and 1.3 <= cam.translation[2] <= 1.8, (d, cam.translation)
        px = V.project_world(cam, X)
        assert ((px >= 0) & (px <= [cam.res_w, cam.res_h])).all()
        # Upright in the image: the head is above (smaller y than) the ankles.
        assert (px[:, J["head"], 1] < px[:, J["l_ankle"], 1]).all()
        azimuths.append(np.arctan2(*(cam.translation[:2] - centre[:2])[::-1]))
    # Four distinct viewpoints around the subject.
    a = np.sort(np.degrees(azimuths))
    assert np.diff(np.r_[a, a[0] + 360]).min() > 20


def test_detector_noise_statistics():
    cam = V.h36m_intrinsics()[0]
    F = 4000
    gt = np.tile(np.linspace(300, 700, 17)[None, :, None], (F, 1, 2))
    depth = np.full(F, 5.0)
    det = V.detector_noise(gt, depth, cam, np.random.default_rng(0))
    again = V.detector_noise(gt, depth, cam, np.random.default_rng(0))
    other = V.detector_noise(gt, depth, cam, np.random.default_rng(1))
    np.testing.assert_array_equal(det, again)
    assert not np.array_equal(det, other)
    err = np.linalg.norm(det - gt, axis=-1)  # [F, 17]
    med = np.median(err, axis=0)
    assert med[J["l_wrist"]] > 2 * med[J["pelvis"]] and med[J["r_ankle"]] > 2 * med[J["thorax"]]
    assert 1.5 < med[J["pelvis"]] < 6 and 4 < med[J["l_wrist"]] < 15  # px at 5 m, f ~1145
    gross = (err > 25).mean()
    assert 0.002 < gross < 0.03, gross
    assert (det >= 0).all() and (det[..., 0] <= cam.res_w - 1).all()


# ---------------------------------------------------------------------------------------------
# the VideoPose3D-layout output
# ---------------------------------------------------------------------------------------------
def _load(path: Path) -> dict:
    with np.load(path, allow_pickle=True) as f:
        return {k: f[k].item() for k in f.files}


def _check_layout(out: Path, name: str, frames: dict[str, dict[str, int]]) -> None:
    d3 = _load(out / f"data_3d_{name}.npz")
    assert list(d3) == ["positions_3d"]
    cams = load_cameras(out / f"cameras_{name}.json")
    assert sorted(cams) == sorted(frames)
    for kind in ("gt", "det"):
        d2 = _load(out / f"data_2d_{name}_{kind}.npz")
        assert sorted(d2) == ["metadata", "positions_2d"]
        assert d2["metadata"] == METADATA
        assert d2["metadata"] == {"layout_name": "h36m", "num_joints": 17,
                                  "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]}
        assert sorted(d2["positions_2d"]) == sorted(frames)
        for s, acts in frames.items():
            assert sorted(d2["positions_2d"][s]) == sorted(acts)
            for a, F in acts.items():
                views = d2["positions_2d"][s][a]
                assert isinstance(views, list) and len(views) == 4
                X = d3["positions_3d"][s][a]
                assert X.dtype == np.float32 and X.shape == (F, 17, 3)
                for v, cam in zip(views, cams[s]):
                    assert v.dtype == np.float32 and v.shape == (F, 17, 2)
                    assert ((v >= 0) & (v <= [cam.res_w, cam.res_h])).all()
                    if kind == "gt":  # the exact projection of the stored 3D (stored to 1/64 px)
                        # place_rig keeps every joint 24 px inside the image.
                        assert ((v >= 23) & (v <= [cam.res_w - 23, cam.res_h - 23])).all()
                        ref = cam.project(world_to_camera(X.astype(np.float64), cam.orientation, cam.translation))
                        np.testing.assert_allclose(v, ref, atol=0.01)
    assert sorted(d3["positions_3d"]) == sorted(frames)


@needs_source
def test_import_mocap_writes_the_videopose3d_layout(tmp_path):
    inputs = [SOURCE / "asfamc" / "02" / "02_01.amc", SOURCE / "bvh" / "131_03.bvh"]
    summary = import_mocap(inputs, tmp_path, "mini", fps=20, log=lambda *a: None)
    # 120 Hz kept every 6th frame: ceil(343 / 6) and ceil(1102 / 6).
    assert summary["frames"] == {"S02": {"02_01": 58}, "S131": {"131_03": 184}}
    assert summary["fps"] == [20.0]
    _check_layout(tmp_path, "mini", summary["frames"])
    # Seeded: a second import gives the same files' contents.
    import_mocap(inputs, tmp_path / "again", "mini", fps=20, log=lambda *a: None)
    for f in ("data_3d_mini.npz", "data_2d_mini_gt.npz", "data_2d_mini_det.npz"):
        a, b = _load(tmp_path / f), _load(tmp_path / "again" / f)
        key = "positions_3d" if "3d" in f else "positions_2d"
        for s in a[key]:
            for act in a[key][s]:
                np.testing.assert_array_equal(np.asarray(a[key][s][act]), np.asarray(b[key][s][act]))
    assert (tmp_path / "cameras_mini.json").read_text() == (tmp_path / "again" / "cameras_mini.json").read_text()


EMBEDDED = Path(DEFAULT_OUT)


@pytest.mark.skipif(not (EMBEDDED / "data_3d_cmu.npz").exists(), reason="embedded CMU set not built")
def test_embedded_cmu_set():
    size = sum(p.stat().st_size for p in EMBEDDED.iterdir() if p.is_file())
    assert size <= 10_000_000, size
    split = json.loads((EMBEDDED / "split.json").read_text())
    assert sorted(split) == ["action_labels", "test", "train"]
    d3 = _load(EMBEDDED / "data_3d_cmu.npz")["positions_3d"]
    frames = {s: {a: len(x) for a, x in acts.items()} for s, acts in d3.items()}
    assert sorted(frames) == ["S01", "S02", "S03", "S131"]
    _check_layout(EMBEDDED, "cmu", frames)
    # Every clip in exactly one part; all of S03 and at least one clip of every other subject in test.
    listed = [(s, a) for part in ("train", "test") for s, acts in split[part].items() for a in acts]
    assert sorted(listed) == sorted((s, a) for s, acts in frames.items() for a in acts)
    assert sorted(split["test"]["S03"]) == sorted(frames["S03"]) and "S03" not in split["train"]
    for s in ("S01", "S02", "S131"):
        assert split["test"].get(s) and split["train"].get(s)
    assert split["action_labels"] == {a: CMU_ACTION_LABELS[a] for acts in frames.values() for a in acts}
    # Each held-out take of a training subject has a same-label sibling in train.
    for s, acts in split["test"].items():
        if s != "S03":
            train_labels = {split["action_labels"][a] for a in split["train"][s]}
            assert all(split["action_labels"][a] in train_labels for a in acts)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
def _edit(src: Path, dst: Path, line: int, new: str | None) -> Path:
    """Copy src to dst with 1-based `line` replaced (None: dropped)."""
    lines = src.read_text().split("\n")
    if new is None:
        del lines[line - 1]
    else:
        lines[line - 1] = new
    dst.write_text("\n".join(lines))
    return dst


def _line_of(path: Path, needle: str) -> int:
    return next(i + 1 for i, l in enumerate(path.read_text().split("\n")) if needle in l)


def _raises_at(path: Path, line: int, fn, *args, match: str = ""):
    with pytest.raises(M.MocapFormatError, match=match) as e:
        fn(*args)
    assert str(e.value).startswith(f"{path}:{line}: "), str(e.value)
    assert e.value.line == line


def test_malformed_asf(tmp_path):
    src = tmp_path / "ok.asf"
    src.write_text(SYNTH_ASF)
    n = _line_of(src, "length 2")
    bad = _edit(src, tmp_path / "len.asf", n, "     length two")
    _raises_at(bad, n, M.parse_asf, bad, match="not a number")
    n = _line_of(src, "root a b")
    bad = _edit(src, tmp_path / "hier.asf", n, "    root a c")
    _raises_at(bad, n, M.parse_asf, bad, match="unknown bone 'c'")
    n = _line_of(src, "dof rx rz")
    bad = _edit(src, tmp_path / "dof.asf", n, "    dof rx tx")
    _raises_at(bad, n, M.parse_asf, bad, match="unsupported dof 'tx'")
    bad = tmp_path / "empty.asf"
    bad.write_text("hello\n")
    _raises_at(bad, 0, M.parse_asf, bad, match="no :root section")


def test_malformed_amc(tmp_path):
    (tmp_path / "t.asf").write_text(SYNTH_ASF)
    skel = M.parse_asf(tmp_path / "t.asf")
    src = tmp_path / "ok.amc"
    src.write_text(SYNTH_AMC)
    bad = _edit(src, tmp_path / "count.amc", 5, "a 90")
    _raises_at(bad, 5, M.parse_amc, bad, skel, match="expected 2 values, got 1")
    bad = _edit(src, tmp_path / "nan.amc", 6, "b ninety")
    _raises_at(bad, 6, M.parse_amc, bad, skel, match="not a number: 'ninety'")
    bad = _edit(src, tmp_path / "bone.amc", 6, "c 1")
    _raises_at(bad, 6, M.parse_amc, bad, skel, match="'c' is not in the skeleton")
    bad = _edit(src, tmp_path / "lost.amc", 6, None)  # frame 1 loses bone b
    _raises_at(bad, 3, M.parse_amc, bad, skel, match="frame 1 lacks bone")


@needs_source
def test_malformed_real_amc_names_file_and_line(tmp_path):
    src = SOURCE / "asfamc" / "02" / "02_01.amc"
    n = _line_of(src, "ltibia")
    bad = _edit(src, tmp_path / "02_01.amc", n, "ltibia 12.5 oops")
    _raises_at(bad, n, M.load_asf_amc, SOURCE / "asfamc" / "02" / "02.asf", bad, match="ltibia")


def test_malformed_bvh(tmp_path):
    src = tmp_path / "ok.bvh"
    src.write_text(SYNTH_BVH)
    n = _line_of(src, "1 2 3 0 0 0 90 90 0")
    bad = _edit(src, tmp_path / "row.bvh", n, "1 2 3 0 0 0 90 90")
    _raises_at(bad, n, M.parse_bvh, bad, match="8 values, the hierarchy has 9 channels")
    bad = _edit(src, tmp_path / "num.bvh", n, "1 2 3 0 0 0 90 x 0")
    _raises_at(bad, n, M.parse_bvh, bad, match="not a number: 'x'")
    n = _line_of(src, "CHANNELS 3")
    bad = _edit(src, tmp_path / "chan.bvh", n, "    CHANNELS 3 Zrotation Xrotation Wrotation")
    _raises_at(bad, n, M.parse_bvh, bad, match="unknown channel 'Wrotation'")
    bad = _edit(src, tmp_path / "count.bvh", n, "    CHANNELS 2 Zrotation Xrotation Yrotation")
    _raises_at(bad, n, M.parse_bvh, bad, match="says 2 but lists 3")
    n = _line_of(src, "Frames: 2")
    bad = _edit(src, tmp_path / "frames.bvh", n, "Frames: 3")
    _raises_at(bad, n, M.parse_bvh, bad, match="says 3 but the file has 2")
    bad = _edit(src, tmp_path / "root.bvh", 1, "HIERARCHIES")
    _raises_at(bad, 1, M.parse_bvh, bad, match="must start with HIERARCHY")
    # A hierarchy without the CMU joints cannot be mapped to H36M17: a clear error, not a KeyError.
    with pytest.raises(M.MocapFormatError, match="lacks joint"):
        M.load_bvh(src, scale=1.0)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        M.parse_asf(tmp_path / "none.asf")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match="unknown motion file type"):
        M.load_clip(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="not a motion file"):
        M.iter_motion_files([tmp_path / "x.txt"])
    with pytest.raises(ValueError, match="no .amc or .bvh"):
        import_mocap([tmp_path], tmp_path / "o", "x", log=lambda *a: None)
    with pytest.raises(ValueError, match="name must be"):
        import_mocap([tmp_path], tmp_path / "o", "a/b", log=lambda *a: None)
    (tmp_path / "t.bvh").write_text(SYNTH_BVH)
    with pytest.raises(ValueError, match="step must be a positive integer"):
        M.load_bvh(tmp_path / "t.bvh", step=0, scale=1.0)
    assert build_main(["--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
