"""The detectors' own files (diffupose/keypoints/detectors.py, layouts.py, people.py): OpenPose
BODY_25 folders, MediaPipe Pose JSON and CSV, COCO-WholeBody, each written here in the detector's
real layout and giving the same poses as the equivalent COCO input where the joints coincide; the
documented mapping to the 17 joints; several people per frame; and the refusals (one line, the
shared file checks)."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

import diffupose
from diffupose import cli
from diffupose.keypoints import (BODY25_JOINTS, COCO17_JOINTS, COCO_WHOLEBODY_JOINTS, DETECTOR_TO_COCO17,
                                 MEDIAPIPE33_JOINTS, KeypointError, convert_layout, read_keypoints)
from diffupose.skeleton import H36M17
from tests.test_keypoints import bodies, coco_results, project

W, H = 1280, 720
SCORE = 0.9

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lifter():
    return diffupose.load_lifter(hypotheses=3, steps=2, seed=0)


@pytest.fixture(scope="module")
def coco():
    """[F, 17, 2] pixels of COCO-ordered bodies."""
    return project(bodies("coco17", 6, seed=5), W, H)


def _c(xy, name):
    return xy[..., COCO17_JOINTS.index(name), :]


# ---------------------------------------------------------------------------------------------
# the detectors' files, as they write them
# ---------------------------------------------------------------------------------------------
def to_body25(xy):
    """COCO [F, 17, 2] -> OpenPose BODY_25 [F, 25, 2]: shared joints by name, its neck and mid-hip
    the shoulder and hip centres, the feet near the ankles."""
    out = np.zeros(xy.shape[:-2] + (25, 2))
    for j, name in enumerate(BODY25_JOINTS):
        if name in COCO17_JOINTS:
            out[..., j, :] = _c(xy, name)
    out[..., BODY25_JOINTS.index("neck"), :] = 0.5 * (_c(xy, "l_shoulder") + _c(xy, "r_shoulder"))
    out[..., BODY25_JOINTS.index("mid_hip"), :] = 0.5 * (_c(xy, "l_hip") + _c(xy, "r_hip"))
    for side in "lr":
        for k, name in enumerate(("big_toe", "small_toe", "heel")):
            out[..., BODY25_JOINTS.index(f"{side}_{name}"), :] = _c(xy, f"{side}_ankle") + [8 * k - 8, 12]
    return out


def openpose_frame(people):
    """One OpenPose --write_json file: every field it writes, BODY_25 in pose_keypoints_2d."""
    return {"version": 1.3, "people": [
        {"person_id": [-1] if tid is None else [tid],
         "pose_keypoints_2d": np.concatenate([p, np.full((25, 1), s)], 1).ravel().tolist(),
         "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
         "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": []}
        for p, s, tid in people]}


def write_openpose(folder: Path, frames, stem="clip"):
    folder.mkdir()
    for i, people in reversed(list(enumerate(frames))):  # the file system's order is no frame order
        (folder / f"{stem}_{i:012d}_keypoints.json").write_text(json.dumps(openpose_frame(people)))
    return folder


def to_mediapipe(xy):
    """COCO pixels [F, 17, 2] -> MediaPipe's 33 landmarks as fractions of the image [F, 33, 2]."""
    # MediaPipe's own names (independent of the package's table): left_/right_ where COCO has l_/r_
    by_name = {c.replace("l_", "left_", 1).replace("r_", "right_", 1) if c[1] == "_" else c: _c(xy, c)
               for c in COCO17_JOINTS}
    near = {"eye_inner": "eye", "eye_outer": "eye", "pinky": "wrist", "index": "wrist", "thumb": "wrist",
            "heel": "ankle", "foot_index": "ankle"}
    out = np.zeros(xy.shape[:-2] + (33, 2))
    for j, name in enumerate(MEDIAPIPE33_JOINTS):
        if name in by_name:
            p = by_name[name]
        elif name.startswith("mouth"):
            p = _c(xy, "nose") + [0, 10]
        else:
            side, part = name.split("_", 1)
            p = by_name[f"{side}_{near[part]}"] + [5, 5]
        out[..., j, :] = p / [W, H]
    return out


def mediapipe_landmarks(frac, vis=SCORE):
    return [{"x": float(x), "y": float(y), "z": -0.1, "visibility": vis} for x, y in frac]


# ---------------------------------------------------------------------------------------------
# the mapping
# ---------------------------------------------------------------------------------------------
def test_each_layout_maps_to_coco_by_name_documented():
    # the documented table: which joint of each detector stands in for each COCO joint
    assert [BODY25_JOINTS.index(DETECTOR_TO_COCO17["body25"][c]) for c in COCO17_JOINTS] == \
        [0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11]
    assert [MEDIAPIPE33_JOINTS.index(DETECTOR_TO_COCO17["mediapipe33"][c]) for c in COCO17_JOINTS] == \
        [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]
    assert [COCO_WHOLEBODY_JOINTS.index(DETECTOR_TO_COCO17["coco_wholebody"][c]) for c in COCO17_JOINTS] == \
        list(range(17))
    assert len(BODY25_JOINTS) == 25 and len(MEDIAPIPE33_JOINTS) == 33 and len(COCO_WHOLEBODY_JOINTS) == 133


@pytest.mark.parametrize("layout", ["body25", "mediapipe33", "coco_wholebody"])
def test_each_layout_converts_as_its_coco_joints(layout):
    rng = np.random.default_rng(0)
    coco = rng.normal(size=(4, 17, 2))
    src = rng.normal(size=(4, len(diffupose.keypoints.LAYOUT_JOINTS[layout]), 2))  # the other joints: anything
    names = diffupose.keypoints.LAYOUT_JOINTS[layout]
    for c, name in DETECTOR_TO_COCO17[layout].items():
        src[:, names.index(name)] = coco[:, COCO17_JOINTS.index(c)]
    score = rng.uniform(size=src.shape[:2])
    score_c = np.stack([score[:, names.index(DETECTOR_TO_COCO17[layout][c])] for c in COCO17_JOINTS], -1)
    a = convert_layout(src, score, score > 0.9, layout, "h36m17")
    b = convert_layout(coco, score_c, score_c > 0.9, "coco17", "h36m17")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    pelvis = a[0][:, H36M17.joints.index("pelvis")]
    np.testing.assert_allclose(pelvis, 0.5 * (_c(coco, "l_hip") + _c(coco, "r_hip")))


# ---------------------------------------------------------------------------------------------
# the same poses as COCO input
# ---------------------------------------------------------------------------------------------
def _coco_lift(lifter, coco):
    return lifter.lift(np.concatenate([coco, np.full(coco.shape[:2] + (1,), SCORE)], -1), layout="coco17",
                       image_size=(W, H))


def _same_poses(a, b, atol=1e-6):
    np.testing.assert_allclose(a.hypotheses, b.hypotheses, atol=atol)
    np.testing.assert_allclose(a.pose3d, b.pose3d, atol=atol)
    np.testing.assert_array_equal(a.weak, b.weak)
    np.testing.assert_allclose(a.keypoints2d, b.keypoints2d, atol=1e-6)


def test_openpose_folder_gives_the_coco_poses(tmp_path, lifter, coco):
    b25 = to_body25(coco)
    folder = write_openpose(tmp_path / "json", [[(p, SCORE, None)] for p in b25])
    kp = read_keypoints(folder)
    assert kp.layout == "body25" and kp.kind == "openpose" and kp.frame_ids.tolist() == list(range(len(coco)))
    res = lifter.lift(folder, image_size=(W, H))
    _same_poses(res, _coco_lift(lifter, coco))
    assert res.meta["input"]["layout"] == "body25" and "body25's COCO-17 joints" in res.meta["input"]["mapping_note"]
    one = lifter.lift(next(folder.iterdir()), image_size=(W, H))  # a single OpenPose file: one frame
    assert one.pose3d.shape == (1, 17, 3)


def test_openpose_folder_through_the_command(tmp_path, lifter, coco, capsys):
    from diffupose.keypoints import read_lift_output

    folder = write_openpose(tmp_path / "json", [[(p, SCORE, None)] for p in to_body25(coco)])
    rc = cli.main(["lift", str(folder), "--image-size", str(W), str(H), "-n", "3", "--steps", "2", "-q",
                   "-o", str(tmp_path / "o.json")])
    assert rc == 0, capsys.readouterr().err
    out = read_lift_output(tmp_path / "o.json")
    assert out.meta["input"]["format"] == "openpose" and out.meta["input"]["layout"] == "body25"
    np.testing.assert_allclose(out.pose3d, lifter.lift(folder, image_size=(W, H)).pose3d, atol=1e-5)
    assert out.frame_id.tolist() == list(range(len(coco)))


def test_openpose_empty_frame_and_undetected_joint(tmp_path, lifter, coco):
    b25 = to_body25(coco)
    b25[2, BODY25_JOINTS.index("l_wrist")] = 0  # OpenPose writes an undetected joint as 0, 0, 0
    frames = [[(p, SCORE, None)] for p in b25]
    frames[4] = []  # nobody in frame 4
    folder = write_openpose(tmp_path / "json", frames)
    with pytest.raises(KeypointError, match="1 of 6 frames are empty .* image_ids 4; pass --skip-empty"):
        lifter.lift(folder, image_size=(W, H))
    res = lifter.lift(folder, image_size=(W, H), skip_empty=True, warn=False)
    assert res.frame_index.tolist() == [0, 1, 2, 3, 5] and res.frame_ids.tolist() == [0, 1, 2, 3, 5]
    assert res.unreliable.tolist() == [False, False, True, False, False]
    assert res.weak[2, H36M17.joints.index("l_wrist")]


def test_mediapipe_json_and_csv_give_the_coco_poses(tmp_path, lifter, coco):
    frac = to_mediapipe(coco)
    expected = _coco_lift(lifter, coco)
    # MessageToDict(results.pose_landmarks) per frame, as a list
    p = tmp_path / "mediapipe.json"
    p.write_text(json.dumps([{"landmark": mediapipe_landmarks(f)} for f in frac]))
    kp = read_keypoints(p)
    assert kp.layout == "mediapipe33" and kp.data.shape == (6, 33, 3)
    _same_poses(lifter.lift(p, image_size=(W, H)), expected)
    # the Tasks API: {"pose_landmarks": [person, ...]} per frame
    p2 = tmp_path / "tasks.json"
    p2.write_text(json.dumps({"frames": [{"pose_landmarks": [mediapipe_landmarks(f)]} for f in frac]}))
    _same_poses(lifter.lift(p2, image_size=(W, H)), expected)
    # CSV with a named column per landmark coordinate
    cols = [f"{j}_{c}" for j in MEDIAPIPE33_JOINTS for c in ("x", "y", "z", "visibility")]
    rows = [",".join([str(i)] + [repr(float(v)) for x, y in f for v in (x, y, -0.1, SCORE)])
            for i, f in enumerate(frac)]
    p3 = tmp_path / "mediapipe.csv"
    p3.write_text("frame," + ",".join(cols) + "\n" + "\n".join(rows) + "\n")
    kp3 = read_keypoints(p3)
    assert kp3.layout == "mediapipe33" and kp3.frame_ids.tolist() == list(range(6))
    _same_poses(lifter.lift(p3, image_size=(W, H)), expected)


def test_coco_wholebody_gives_the_coco_poses(tmp_path, lifter, coco):
    rng = np.random.default_rng(1)
    whole = np.concatenate([coco, rng.uniform(100, 600, (len(coco), 116, 2))], 1)  # feet, face, hands after the body
    p = tmp_path / "wholebody.json"
    p.write_text(json.dumps(coco_results(whole, SCORE)))
    kp = read_keypoints(p)
    assert kp.layout == "coco_wholebody" and kp.data.shape == (6, 133, 3)
    _same_poses(lifter.lift(p, image_size=(W, H)), _coco_lift(lifter, coco))


# ---------------------------------------------------------------------------------------------
# several people per frame
# ---------------------------------------------------------------------------------------------
def _tracked_results(coco):
    """Track 1 in every frame (score 0.8); track 2, a second person, more confident (0.95) but only
    in frames 0 and 1."""
    other = coco + [300, 0]
    doc = []
    for i, p in enumerate(coco):
        doc.append({**coco_results(p[None])[0], "image_id": i, "score": 0.8, "track_id": 1})
        if i < 2:
            doc.append({**coco_results(other[i][None])[0], "image_id": i, "score": 0.95, "track_id": 2})
    return doc, other


def test_tracks_are_followed_and_chosen(tmp_path, coco):
    doc, other = _tracked_results(coco)
    p = tmp_path / "tracked.json"
    p.write_text(json.dumps(doc))
    auto = read_keypoints(p)  # the most confident track over the clip: 1 (6 x 0.8 against 2 x 0.95)
    np.testing.assert_allclose(auto.data[..., :2], coco)
    assert any("lifting track id 1" in n for n in auto.notes)
    best = read_keypoints(p, person="best")  # per frame: the second person where it is there
    np.testing.assert_allclose(best.data[:2, :, :2], other[:2])
    np.testing.assert_allclose(best.data[2:, :, :2], coco[2:])
    two = read_keypoints(p, person=2)  # absent after frame 1: detector misses
    np.testing.assert_allclose(two.data[:2, :, :2], other[:2])
    assert np.all(two.data[2:] == 0)
    with pytest.raises(KeypointError, match="no person with track id 7; the detections' track ids: 1, 2"):
        read_keypoints(p, person=7)


def test_untracked_people_most_confident_per_frame(tmp_path, coco):
    b25 = to_body25(coco)
    frames = [[(p + [400, 0], 0.5, None), (p, SCORE, None)] for p in b25]  # the nearer person listed second
    frames[3] = [(b25[3] + [400, 0], 0.95, None), (b25[3], SCORE, None)]
    kp = read_keypoints(write_openpose(tmp_path / "json", frames))
    np.testing.assert_allclose(kp.data[[0, 1, 2, 4, 5], :, :2], b25[[0, 1, 2, 4, 5]])
    np.testing.assert_allclose(kp.data[3, :, :2], b25[3] + [400, 0])
    assert any("highest-scoring" in n for n in kp.notes)
    # OpenPose's own person_id is a track id; MediaPipe's several people per frame (Tasks API)
    frames = [[(p + [400, 0], 0.95, 4), (p, SCORE, 3)] for p in b25]
    frames[0] = [(b25[0], SCORE, 3)]
    tracked = read_keypoints(write_openpose(tmp_path / "ids", frames), person=3)
    np.testing.assert_allclose(tracked.data[..., :2], b25)
    frac = to_mediapipe(coco)
    p = tmp_path / "people.json"
    p.write_text(json.dumps([{"pose_landmarks": [mediapipe_landmarks(f + 0.2, 0.3), mediapipe_landmarks(f)]}
                             for f in frac]))
    np.testing.assert_allclose(read_keypoints(p).data[..., :2], to_mediapipe(coco).reshape(6, 33, 2))


# ---------------------------------------------------------------------------------------------
# refusals: one line naming the file, status 1, the shared checks
# ---------------------------------------------------------------------------------------------
def _refused(argv, capsys, match):
    rc = cli.main([str(a) for a in argv] + ["-o", "/tmp/never-written-h16a.npz", "-q"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and ": note:" not in ln]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], err
    assert not Path("/tmp/never-written-h16a.npz").exists()


def test_detector_files_refused_in_one_line(tmp_path, coco, capsys):
    size = ["--image-size", W, H]
    bad = write_openpose(tmp_path / "coco18", [[(to_body25(coco[0]), SCORE, None)]])
    f = next(bad.iterdir())
    doc = json.loads(f.read_text())
    doc["people"][0]["pose_keypoints_2d"] = doc["people"][0]["pose_keypoints_2d"][:54]
    f.write_text(json.dumps(doc))
    _refused(["lift", bad, *size], capsys, "holds 54 numbers, not [x, y, confidence] * 25 of BODY_25 (the COCO-18")
    dup = write_openpose(tmp_path / "two", [[(to_body25(coco[0]), SCORE, None)]], stem="a")
    (dup / "b_000000000000_keypoints.json").write_text((dup / "a_000000000000_keypoints.json").read_text())
    _refused(["lift", dup, *size], capsys, "several *_keypoints.json files have the same frame number")
    deep = write_openpose(tmp_path / "deep", [[(to_body25(coco[0]), SCORE, None)]])
    (deep / "x_000000000001_keypoints.json").write_text("[" * 100000 + "]" * 100000)
    _refused(["lift", deep, *size], capsys, "JSON nested too deeply")
    if hasattr(os, "mkfifo"):
        fifo = write_openpose(tmp_path / "fifo", [[(to_body25(coco[0]), SCORE, None)]])
        os.mkfifo(fifo / "x_000000000001_keypoints.json")
        _refused(["lift", fifo, *size], capsys, "is a FIFO (named pipe), not a regular file")
    _refused(["lift", tmp_path, *size], capsys, "is a directory without *_keypoints.json files")
    mp = tmp_path / "mp.json"
    mp.write_text(json.dumps([{"landmark": mediapipe_landmarks(f)} for f in to_mediapipe(coco)]))
    _refused(["lift", mp], capsys, "mediapipe33 landmarks are fractions of the image width and height")
    _refused(["lift", mp, "--normalized"], capsys, "not --normalized")
    short = tmp_path / "short.json"
    short.write_text(json.dumps([{"landmark": mediapipe_landmarks(to_mediapipe(coco)[0][:20])}]))
    _refused(["lift", short, *size], capsys, "frame 0: 20 landmarks, MediaPipe Pose has 33")
    nan = tmp_path / "nan.json"
    lms = mediapipe_landmarks(to_mediapipe(coco)[0])
    lms[3]["visibility"] = float("nan")
    nan.write_text(json.dumps([{"landmark": lms}]))
    _refused(["lift", nan, *size], capsys, "NaN or infinite values in frames 0")
    tracked = tmp_path / "tracked.json"
    tracked.write_text(json.dumps(_tracked_results(coco)[0]))
    _refused(["lift", tracked, *size, "--person", "9"], capsys, "no person with track id 9")
    _refused(["lift", tracked, *size, "--person", "tallest"], capsys, "--person 'tallest': expected auto, best")
