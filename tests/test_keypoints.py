"""Keypoint readers, the COCO -> Human3.6M mapping, the input checks and the lift-output writers."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from diffupose.data.cameras import normalize_screen_coordinates
from diffupose.keypoints import (COCO17_JOINTS, KeypointError, LiftWriter, check_keypoints, check_output_path,
                                 compare_layouts, convert_layout, prepare_chunk, read_keypoints, read_lift_output,
                                 resolve_layout)
from diffupose.skeleton import H36M16, H36M17

# ---------------------------------------------------------------------------------------------
# synthetic bodies (also used by tests/test_cli.py): a standing person, in both joint orders,
# turned about the vertical, jittered, seen by a pinhole camera 4.5 m away
# ---------------------------------------------------------------------------------------------
# world: x to the person's left, y up, z towards the camera; metres
H36M17_BODY = np.array([
    [0, 1.0, 0], [-0.13, 0.98, 0], [-0.14, 0.55, 0.02], [-0.15, 0.10, 0],
    [0.13, 0.98, 0], [0.14, 0.55, 0.02], [0.15, 0.10, 0],
    [0, 1.25, 0], [0, 1.50, 0], [0, 1.62, 0.10], [0, 1.75, 0.02],
    [0.18, 1.47, 0], [0.25, 1.20, 0.02], [0.28, 0.95, 0.08],
    [-0.18, 1.47, 0], [-0.25, 1.20, 0.02], [-0.28, 0.95, 0.08]])
COCO17_BODY = np.array([
    [0, 1.62, 0.10], [0.03, 1.66, 0.08], [-0.03, 1.66, 0.08], [0.08, 1.64, 0], [-0.08, 1.64, 0],
    [0.18, 1.47, 0], [-0.18, 1.47, 0], [0.25, 1.20, 0.02], [-0.25, 1.20, 0.02], [0.28, 0.95, 0.08],
    [-0.28, 0.95, 0.08], [0.13, 0.98, 0], [-0.13, 0.98, 0], [0.14, 0.55, 0.02], [-0.14, 0.55, 0.02],
    [0.15, 0.10, 0], [-0.15, 0.10, 0]])


def bodies(layout: str, n: int, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """n bodies [n, 17, 3] in camera coordinates (x right, y down, z forward, metres)."""
    rng = np.random.default_rng(seed)
    T = H36M17_BODY if layout == "h36m17" else COCO17_BODY
    th = rng.uniform(0, 2 * np.pi, n)
    c, s = np.cos(th), np.sin(th)
    R = np.zeros((n, 3, 3))
    R[:, 0, 0], R[:, 0, 2], R[:, 1, 1], R[:, 2, 0], R[:, 2, 2] = c, s, 1, -s, c
    X = np.einsum("nij,kj->nki", R, T - [0, 1.0, 0]) + rng.normal(0, noise, (n, 17, 3))
    return np.stack([X[..., 0], -X[..., 1], X[..., 2] + 4.5], -1)


def project(X: np.ndarray, w: float = 1000, h: float = 800, f: float = 900.0) -> np.ndarray:
    return f * X[..., :2] / X[..., 2:] + [w / 2, h / 2]


def coco_results(xy: np.ndarray, score: float = 0.9) -> list[dict]:
    return [{"image_id": i, "category_id": 1, "score": 0.95,
             "keypoints": np.concatenate([p, np.full((len(p), 1), score)], 1).ravel().tolist()}
            for i, p in enumerate(xy)]


# ---------------------------------------------------------------------------------------------
# mapping
# ---------------------------------------------------------------------------------------------
def test_coco_to_h36m_mapping_by_name():
    rng = np.random.default_rng(1)
    xy = rng.normal(size=(5, 17, 2))
    sc = rng.uniform(size=(5, 17))
    miss = rng.uniform(size=(5, 17)) < 0.2
    out, osc, om = convert_layout(xy, sc, miss, "coco17", "h36m17")
    c = {n: i for i, n in enumerate(COCO17_JOINTS)}
    h = {n: i for i, n in enumerate(H36M17.joints)}
    mid = lambda *ns: np.mean([xy[:, c[n]] for n in ns], 0)  # noqa: E731
    expected = {"pelvis": mid("l_hip", "r_hip"), "thorax": mid("l_shoulder", "r_shoulder"),
                "spine": 0.5 * (mid("l_hip", "r_hip") + mid("l_shoulder", "r_shoulder")),
                "head": mid("l_eye", "r_eye"), "nose": xy[:, c["nose"]]}
    for limb in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist"):
        for side in "lr":
            expected[f"{side}_{limb}"] = xy[:, c[f"{side}_{limb}"]]
    assert set(expected) == set(H36M17.joints)
    for name, want in expected.items():
        np.testing.assert_allclose(out[:, h[name]], want, rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(osc[:, h["pelvis"]], np.minimum(sc[:, c["l_hip"]], sc[:, c["r_hip"]]))
    np.testing.assert_array_equal(osc[:, h["spine"]], sc[:, [c["l_hip"], c["r_hip"], c["l_shoulder"],
                                                             c["r_shoulder"]]].min(1))
    np.testing.assert_array_equal(om[:, h["head"]], miss[:, c["l_eye"]] | miss[:, c["r_eye"]])
    np.testing.assert_array_equal(osc[:, h["r_wrist"]], sc[:, c["r_wrist"]])


def test_h36m_layout_conversions():
    xy = np.random.default_rng(0).normal(size=(3, 17, 2))
    out16, _, _ = convert_layout(xy, None, None, "h36m17", "h36m16")
    np.testing.assert_array_equal(out16, np.delete(xy, H36M17.index("nose"), axis=1))
    assert out16.shape[1] == H36M16.num_joints
    c16, _, _ = convert_layout(xy, None, None, "coco17", "h36m16")
    c17, _, _ = convert_layout(xy, None, None, "coco17", "h36m17")
    np.testing.assert_array_equal(c16, np.delete(c17, H36M17.index("nose"), axis=1))
    with pytest.raises(KeypointError, match="lacks the nose"):
        convert_layout(xy[:, :16], None, None, "h36m16", "h36m17")
    with pytest.raises(KeypointError, match="cannot map coco17"):
        convert_layout(xy, None, None, "coco17", "humaneva15")


@pytest.mark.parametrize("noise", [0.0, 0.03, 0.08])
def test_layout_is_recognised_from_the_poses(noise):
    for layout in ("coco17", "h36m17"):
        xy = project(bodies(layout, 200, seed=3, noise=noise))
        assert compare_layouts(xy)[0] == layout
        assert compare_layouts(xy[:1])[0] == layout  # one frame is enough for a clean body
    # points with no body structure are not decided either way
    junk = np.random.default_rng(0).uniform(0, 1000, (50, 17, 2))
    assert compare_layouts(junk)[0] is None


def test_screen_normalisation_convention():
    w, h = 1000.0, 800.0
    px = np.array([[[0.0, 0.0], [w, h], [w / 2, h / 2]]])
    n = normalize_screen_coordinates(px, w, h)
    np.testing.assert_allclose(n[0], [[-1, -h / w], [1, h / w], [0, 0]], atol=1e-6)


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------
def test_coco_results_keeps_best_person_ordered_by_image_id(tmp_path):
    xy = project(bodies("coco17", 4))
    best = coco_results(xy)
    weaker = [{**d, "score": 0.1, "keypoints": [v + 7 for v in d["keypoints"]]} for d in best]
    for i, (b, w) in enumerate(zip(best, weaker)):
        b["image_id"] = w["image_id"] = 10 + i
    doc = [(best + weaker)[i] for i in (5, 2, 7, 0, 3, 6, 1, 4)]  # shuffled, people of one image apart
    p = tmp_path / "k.json"
    p.write_text(json.dumps(doc))
    kp = read_keypoints(p)
    assert kp.kind == "coco-json" and kp.layout == "coco17" and kp.data.shape == (4, 17, 3)
    np.testing.assert_array_equal(kp.frame_ids, [10, 11, 12, 13])
    np.testing.assert_allclose(kp.data[..., :2], xy, rtol=1e-12)
    assert any("highest-scoring" in n for n in kp.notes)
    p.write_text(json.dumps([{**d, "image_id": i} for d, i in zip(coco_results(xy), (3, 4, 8, 9))]))
    kp = read_keypoints(p)
    np.testing.assert_array_equal(kp.frame_ids, [3, 4, 8, 9])
    assert any("3 image_ids between 3 and 9 have no detection" in n for n in kp.notes)


def test_json_frame_list_nested_and_misses(tmp_path):
    xy = project(bodies("coco17", 3))
    frames = [{"keypoints": xy[0].tolist()}, {"keypoints": None}, {"keypoints": xy[2].tolist()}]
    p = tmp_path / "k.json"
    p.write_text(json.dumps(frames))
    kp = read_keypoints(p)
    assert kp.data.shape == (3, 17, 2) and kp.frame_ids is None
    assert not kp.data[1].any()  # a miss is an empty frame, caught by the checks
    p.write_text(json.dumps({"annotations": coco_results(xy)}))
    assert read_keypoints(p).data.shape == (3, 17, 3)


def test_npy_is_memory_mapped_and_npz_keys(tmp_path):
    a = np.random.default_rng(0).uniform(0, 500, (6, 17, 3)).astype(np.float32)
    np.save(tmp_path / "k.npy", a)
    kp = read_keypoints(tmp_path / "k.npy")
    assert isinstance(kp.data, np.memmap)
    np.testing.assert_array_equal(kp.data, a)
    np.savez(tmp_path / "one.npz", whatever=a)
    np.testing.assert_array_equal(read_keypoints(tmp_path / "one.npz").data, a)
    np.savez(tmp_path / "two.npz", keypoints=a, other=a[:1])
    np.testing.assert_array_equal(read_keypoints(tmp_path / "two.npz").data, a)
    np.savez(tmp_path / "amb.npz", a=a, b=a)
    with pytest.raises(KeypointError, match="--key"):
        read_keypoints(tmp_path / "amb.npz")
    np.testing.assert_array_equal(read_keypoints(tmp_path / "amb.npz", key="b").data, a)


def test_csv_variants(tmp_path):
    xy = project(bodies("h36m17", 4))
    flat = xy.reshape(4, -1)
    p = tmp_path / "k.csv"
    np.savetxt(p, flat, delimiter=",")
    kp = read_keypoints(p)
    assert kp.data.shape == (4, 17, 2)
    np.testing.assert_allclose(kp.data, xy, rtol=1e-9)
    header = "frame," + ",".join(f"{j}_{c}" for j in H36M17.joints for c in "xys")
    rows = [f"{100 + i}," + ",".join(f"{v:.6f}" for v in np.concatenate([xy[i], np.ones((17, 1))], 1).ravel())
            for i in range(4)]
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    kp = read_keypoints(p)
    assert kp.data.shape == (4, 17, 3)
    np.testing.assert_array_equal(kp.frame_ids, [100, 101, 102, 103])
    p2 = tmp_path / "k.txt"
    np.savetxt(p2, flat)  # whitespace separated
    assert read_keypoints(p2).data.shape == (4, 17, 2)


def _write(tmp_path, name, content):
    p = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(p, content)
    elif isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


BAD_FILES = [
    ("trunc.json", '[{"image_id": 1, "keypoints": [1, 2', "not valid JSON"),
    ("bin.json", b"\xff\xfe\x00garbage", "not valid JSON"),
    ("empty.json", "[]", "no frames"),
    ("obj.json", {"foo": 1}, "expected a list"),
    ("nokp.json", [{"image_id": 1}], "not an object with \"keypoints\""),
    ("mixed.json", [{"image_id": 1, "keypoints": [0] * 51}, {"keypoints": [0] * 51}], "some entries have"),
    ("count.json", [{"keypoints": [1.0] * 50}], r"not \[x, y, score\]"),
    ("strs.json", [{"keypoints": ["a"] * 51}], "not numbers"),
    ("ragged.json", [{"keypoints": [[1, 2], [1, 2, 3]] * 9}], "not numbers or rows differ"),
    ("shapes.json", [{"keypoints": [1.0] * 51}, {"keypoints": [1.0] * 48}], "different keypoint shapes"),
    ("joints.json", [{"keypoints": [1.0] * 36}], "12 joints per frame"),
    ("allnull.json", [{"keypoints": None}], "every frame is empty"),
    ("chan.npy", np.ones((3, 17, 4)), "4 channels"),
    ("dims.npy", np.ones((3, 34)), "expected an array"),
    ("zero.npy", np.ones((0, 17, 2)), "no frames"),
    ("bool.npy", np.ones((3, 17, 2), dtype=bool), "must be numbers"),
    ("obj.npy", np.array([{"a": 1}], dtype=object), "pickled objects are refused"),
    ("trunc.npy", b"\x93NUMPY\x01\x00", "truncated|not a numeric"),
    ("ragged.csv", "1,2,3\n1,2\n", "2 columns, but the first row has 3"),
    ("cols.csv", ",".join(["1"] * 33) + "\n", "33 value columns"),
    ("text.csv", "a,b\nc,d\n", "not a number"),
    ("empty.csv", "", "no frames"),
    ("kp.xyz", "1", "unknown input format"),
]


@pytest.mark.parametrize("name,content,match", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused_clearly(tmp_path, name, content, match):
    p = _write(tmp_path, name, content)
    with pytest.raises(KeypointError, match=match) as e:
        read_keypoints(p)
    assert "\n" not in str(e.value)


def test_bad_paths(tmp_path):
    with pytest.raises(KeypointError, match="input not found"):
        read_keypoints(tmp_path / "nope.json")
    with pytest.raises(KeypointError, match="is a directory"):
        read_keypoints(tmp_path)
    np.savez(tmp_path / "pick.npz", k=np.array([{"a": 1}], dtype=object))
    with pytest.raises(KeypointError, match="pickled objects are refused"):
        read_keypoints(tmp_path / "pick.npz")


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def _kp(tmp_path, a):
    np.save(tmp_path / "k.npy", a)
    return read_keypoints(tmp_path / "k.npy")


def test_check_nan_inf_and_empty_frames(tmp_path):
    a = project(bodies("h36m17", 10))
    b = a.copy()
    b[3, 4, 0] = np.nan
    b[7, 0, 1] = np.inf
    with pytest.raises(KeypointError, match=r"NaN or infinite values in frames 3, 7"):
        check_keypoints(_kp(tmp_path, b), image_size=(1000, 800), normalized=False, skip_empty=False)
    b = a.copy()
    b[2] = 0
    b[5] = np.nan  # a whole NaN frame is a miss too
    with pytest.raises(KeypointError, match=r"2 of 10 frames are empty .*frames 2, 5.*--skip-empty"):
        check_keypoints(_kp(tmp_path, b), image_size=(1000, 800), normalized=False, skip_empty=False)
    plan = check_keypoints(_kp(tmp_path, b), image_size=(1000, 800), normalized=False, skip_empty=True)
    np.testing.assert_array_equal(plan.frames, [0, 1, 3, 4, 6, 7, 8, 9])
    assert any("skipped 2 empty frames" in n for n in plan.notes)
    with pytest.raises(KeypointError, match="all 10 frames are empty"):
        check_keypoints(_kp(tmp_path, np.zeros_like(a)), image_size=(1000, 800), normalized=False, skip_empty=True)


def test_check_units(tmp_path):
    a = project(bodies("h36m17", 10))
    kp = _kp(tmp_path, a)
    with pytest.raises(KeypointError, match="need the image size: pass --image-size"):
        check_keypoints(kp, image_size=None, normalized=False, skip_empty=False)
    with pytest.raises(KeypointError, match="either --image-size .* or --normalized"):
        check_keypoints(kp, image_size=(1000, 800), normalized=True, skip_empty=False)
    with pytest.raises(KeypointError, match="look like pixels"):
        check_keypoints(kp, image_size=None, normalized=True, skip_empty=False)
    with pytest.raises(KeypointError, match="far outside the 300 x 200 image"):
        check_keypoints(kp, image_size=(300, 200), normalized=False, skip_empty=False)
    unit = _kp(tmp_path, a / [1000, 800])
    with pytest.raises(KeypointError, match="normalised to the unit square"):
        check_keypoints(unit, image_size=(1000, 800), normalized=False, skip_empty=False)
    norm = _kp(tmp_path, normalize_screen_coordinates(a, 1000, 800))
    with pytest.raises(KeypointError, match="pass --normalized"):
        check_keypoints(norm, image_size=None, normalized=False, skip_empty=False)
    plan = check_keypoints(norm, image_size=None, normalized=True, skip_empty=False)
    assert not plan.pixel and len(plan.frames) == 10


def test_undetected_joints_are_weak_and_scores_flag(tmp_path):
    xy = project(bodies("coco17", 4))
    a = np.concatenate([xy, np.full((4, 17, 1), 0.9)], -1)
    a[1, COCO17_JOINTS.index("l_hip")] = 0  # undetected: (0, 0) with score 0
    a[2, COCO17_JOINTS.index("r_wrist"), 2] = 0.1  # low score
    kp = _kp(tmp_path, a)
    plan = check_keypoints(kp, image_size=(1000, 800), normalized=False, skip_empty=False)
    assert plan.missing_joints == 1 and any("undetected" in n for n in plan.notes)
    c = prepare_chunk(kp, plan.frames, plan, "coco17", "h36m17", min_score=0.3)
    h = H36M17.index
    assert set(zip(*np.nonzero(c.weak))) == {(1, h("l_hip")), (1, h("pelvis")), (1, h("spine")), (2, h("r_wrist"))}
    np.testing.assert_allclose(c.pose2d, normalize_screen_coordinates(c.keypoints2d, 1000, 800), atol=1e-6)
    assert c.score[2, h("r_wrist")] == pytest.approx(0.1)
    # the undetected hip is lifted from a stand-in (never from pixel 0, 0), and only its frame is unreliable
    np.testing.assert_array_equal(c.unreliable, [False, True, False, False])
    assert set(zip(*np.nonzero(c.missing))) == {(1, h("l_hip")), (1, h("pelvis")), (1, h("spine"))}
    r_hip = xy[1, COCO17_JOINTS.index("r_hip")]
    np.testing.assert_allclose(c.keypoints2d[1, h("pelvis")], r_hip, rtol=1e-6)  # the usable hip beside it
    np.testing.assert_allclose(c.keypoints2d[1, h("l_hip")], c.keypoints2d[1, h("l_knee")], rtol=1e-6)


def test_resolve_layout(tmp_path):
    h36m = _kp(tmp_path, project(bodies("h36m17", 20)))
    frames = np.arange(20)
    assert resolve_layout(h36m, None, frames, pixel=True)[0] == "h36m17"
    with pytest.raises(KeypointError, match="look like h36m17 order, not coco17.*--layout h36m17"):
        resolve_layout(h36m, "coco17", frames, pixel=True)
    assert resolve_layout(h36m, "coco17", frames, pixel=True, check=False)[0] == "coco17"
    junk = _kp(tmp_path, np.random.default_rng(0).uniform(0, 900, (20, 17, 2)))
    with pytest.raises(KeypointError, match="pass --layout coco17 or --layout h36m17"):
        resolve_layout(junk, None, frames, pixel=True)
    with pytest.raises(KeypointError, match="--layout h36m16 has 16"):
        resolve_layout(h36m, "h36m16", frames, pixel=True)


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------
def _fill(writer, F, N, J, chunk=3, seed=0, scores=True):
    rng = np.random.default_rng(seed)
    ref = {"pose3d": rng.normal(size=(F, J, 3)).astype(np.float32),
           "hypotheses": rng.normal(size=(F, N, J, 3)).astype(np.float32),
           "spread": rng.uniform(size=(F, J)).astype(np.float32), "weak": rng.uniform(size=(F, J)) < 0.3,
           "unreliable": rng.uniform(size=F) < 0.5,
           "pose2d": rng.normal(size=(F, J, 2)).astype(np.float32),
           "keypoints2d": rng.uniform(0, 900, (F, J, 2)).astype(np.float32),
           "frame_index": np.arange(F, dtype=np.int64) * 2, "score": rng.uniform(size=(F, J)).astype(np.float32)}
    if not scores:
        del ref["score"]
    for s in range(0, F, chunk):
        writer.write(**{k: v[s:s + chunk] for k, v in ref.items()})
    return ref


@pytest.mark.parametrize("ext", [".npz", ".json"])
def test_writer_round_trip(tmp_path, ext):
    F, N, J = 8, 3, 17
    out = tmp_path / f"o{ext}"
    ids = np.arange(100, 100 + 2 * F)
    w = LiftWriter(out, frames=F, n_hyp=N, joint_names=H36M17.joints, meta={"skeleton": "h36m17", "x": 1},
                   has_scores=True, frame_ids=ids)
    ref = _fill(w, F, N, J)
    assert not out.exists()  # appears only when complete
    w.close()
    assert sorted(os.listdir(tmp_path)) == [out.name]  # no temporaries left
    res = read_lift_output(out)
    tol = 1e-5 if ext == ".json" else 0  # JSON keeps 10 micrometres
    for k in ("pose3d", "hypotheses", "spread", "pose2d"):
        np.testing.assert_allclose(getattr(res, k), ref[k], atol=tol, rtol=0, err_msg=k)
    np.testing.assert_array_equal(res.weak, ref["weak"])
    np.testing.assert_array_equal(res.unreliable, ref["unreliable"])
    np.testing.assert_array_equal(res.frame_index, ref["frame_index"])
    np.testing.assert_array_equal(res.frame_id, ids[ref["frame_index"]])
    assert res.joint_names == H36M17.joints and res.meta["x"] == 1
    if ext == ".npz":  # read through memory maps of the archive's members: one frame costs one frame
        assert isinstance(res.hypotheses, np.memmap) and isinstance(res.pose3d, np.memmap)


def test_compressed_npz_output_is_read_too(tmp_path):
    w = LiftWriter(tmp_path / "o.npz", frames=4, n_hyp=2, joint_names=H36M17.joints, meta={}, has_scores=False)
    ref = _fill(w, 4, 2, 17, scores=False)
    w.close()
    with np.load(tmp_path / "o.npz") as z:
        np.savez_compressed(tmp_path / "c.npz", **{k: z[k] for k in z.files})
    res = read_lift_output(tmp_path / "c.npz")
    assert not isinstance(res.hypotheses, np.memmap)
    np.testing.assert_array_equal(res.hypotheses, ref["hypotheses"])


def test_writer_abort_leaves_nothing(tmp_path):
    w = LiftWriter(tmp_path / "o.npz", frames=5, n_hyp=2, joint_names=H36M17.joints, meta={}, has_scores=False)
    _fill(w, 3, 2, 17, scores=False)
    with pytest.raises(ValueError, match="3 of 5 frames"):
        w.close()
    w.abort()
    assert os.listdir(tmp_path) == []


def test_check_output_path(tmp_path):
    assert check_output_path(tmp_path / "o.json") == tmp_path / "o.json"
    with pytest.raises(KeypointError, match="unknown format '.txt'"):
        check_output_path(tmp_path / "o.txt")
    with pytest.raises(KeypointError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "o.npz")
    (tmp_path / "f").write_text("x")
    with pytest.raises(KeypointError, match="is not a directory"):
        check_output_path(tmp_path / "f" / "o.npz")
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(KeypointError, match="is a directory"):
        check_output_path(tmp_path / "d.npz")
    (tmp_path / "in.npz").write_text("x")
    with pytest.raises(KeypointError, match="is the input file"):
        check_output_path(tmp_path / "in.npz", inputs=[tmp_path / "in.npz"])


def test_unwritable_output_path(tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits: try a folder no one can create files in
        target = Path("/sys/diffupose-test.npz")
        if not Path("/sys").is_dir():
            pytest.skip("running as root and no /sys to try")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "o.npz"
    with pytest.raises(KeypointError, match="cannot write"):
        check_output_path(target)


def test_read_lift_output_refuses_other_files(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.ones(3))
    with pytest.raises(KeypointError, match="not a diffupose lift output .missing"):
        read_lift_output(tmp_path / "x.npz")
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(KeypointError, match="not a diffupose lift output"):
        read_lift_output(tmp_path / "x.json")
    with pytest.raises(KeypointError, match="not found"):
        read_lift_output(tmp_path / "y.npz")
