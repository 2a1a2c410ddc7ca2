"""diffupose.api: the README's Python example as written, the API and the command giving the same
poses (the CLI is a layer over it), arrays with scores, the refusals (one line, the CLI's
messages), warnings, and the clip-writer hook of `Lifted.save` and `diffupose lift -o`."""
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import diffupose
from diffupose import api, cli
from diffupose.keypoints import KeypointError, read_lift_output
from diffupose.keypoints import writers as W
from tests.test_keypoints import bodies, coco_results, project

ROOT = Path(__file__).resolve().parent.parent
IMG = (1920, 1080)
FAST = dict(hypotheses=3, steps=2, seed=0)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lifter():
    return diffupose.load_lifter(**FAST)


def coco_pixels(n=8, seed=3):
    return project(bodies("coco17", n, seed=seed), *IMG)


def readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"## From Python\n\n```python\n(.*?)```", text, re.S)
    assert m, "README has no '## From Python' section with a python block"
    return m.group(1)


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    code = readme_python_example()
    assert len(code.strip().splitlines()) <= 10
    xy = coco_pixels(12)
    (tmp_path / "video_keypoints.json").write_text(json.dumps(coco_results(xy)))
    np.save(tmp_path / "keypoints.npy", xy)
    np.save(tmp_path / "scores.npy", np.full(xy.shape[:2], 0.9))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    res = scope["result"]
    assert res.pose3d.shape == (12, 17, 3) and res.hypotheses.shape == (12, 10, 17, 3)
    assert res.joint_names[0] == "pelvis" and np.all(res.pose3d[:, 0] == 0)  # root-relative
    # metres: a body's extent is of the order of a metre, not of pixels or millimetres
    extent = np.ptp(res.pose3d, axis=1).max(-1)
    assert np.all((extent > 0.3) & (extent < 3)), extent
    out = read_lift_output(tmp_path / "poses.npz")
    np.testing.assert_array_equal(out.pose3d, res.pose3d)
    assert out.meta["settings"]["hypotheses"] == 10 and out.meta["units"] == "metres"
    printed = capsys.readouterr().out
    assert "(12, 17, 3) pelvis" in printed


def test_api_and_command_give_the_same_poses(tmp_path, lifter, capsys):
    xy = coco_pixels()
    p = tmp_path / "kp.json"
    p.write_text(json.dumps(coco_results(xy)))
    res = lifter.lift(p, image_size=IMG)
    again = lifter.lift(p, image_size=IMG)  # every call starts from the seed
    np.testing.assert_array_equal(res.hypotheses, again.hypotheses)
    rc = cli.main(["lift", str(p), "--image-size", *map(str, IMG), "-n", "3", "--steps", "2", "-q",
                   "-o", str(tmp_path / "o.npz")])
    assert rc == 0, capsys.readouterr().err
    out = read_lift_output(tmp_path / "o.npz")
    np.testing.assert_array_equal(out.pose3d, res.pose3d)
    np.testing.assert_array_equal(out.hypotheses, res.hypotheses)
    np.testing.assert_array_equal(out.frame_id, res.frame_ids)
    assert res.settings == {k: out.meta["settings"][k] for k in res.settings}
    assert res.meta["input"]["mapping_note"].startswith("approximate")


def test_array_with_scores_is_the_three_channel_array(lifter):
    xy = coco_pixels()
    s = np.full(xy.shape[:2], 0.9)
    s[2, 9] = 0.1  # a weak wrist
    a = lifter.lift(xy, layout="coco17", image_size=IMG, scores=s)
    b = lifter.lift(np.concatenate([xy, s[..., None]], -1), layout="coco17", image_size=IMG)
    np.testing.assert_array_equal(a.pose3d, b.pose3d)
    names = list(a.joint_names)
    assert a.weak[2, names.index("l_wrist")] and a.weak.sum() == 1 and a.score.shape == (8, 17)
    one = lifter.lift(xy[0], layout="coco17", image_size=IMG)  # one frame [J, 2]
    assert one.pose3d.shape == (1, 17, 3)


@pytest.mark.parametrize("call,match", [
    (lambda L, xy: L.lift(np.where(np.arange(17)[:, None] == 5, np.inf, xy), layout="coco17", image_size=IMG),
     "<array>: NaN or infinite values in frames 0, 1, 2"),
    (lambda L, xy: L.lift(xy, layout="coco17", image_size=IMG, scores=np.ones((8, 16))),
     "scores have shape (8, 16), expected"),
    (lambda L, xy: L.lift(xy, layout="coco18", image_size=IMG), "unknown layout 'coco18'"),
    (lambda L, xy: L.lift(xy, layout="coco17"), "need the image size"),
    (lambda L, xy: L.lift(xy, layout="coco17", image_size=IMG, person="tallest"), "expected auto, best or a track id"),
    (lambda L, xy: L.lift([[1, 2], [3]], image_size=IMG), "<array>"),
    (lambda L, xy: L.lift("/nonexistent/kp.json", image_size=IMG), "input not found"),
    (lambda L, xy: diffupose.load_lifter(hypotheses=0), "hypotheses must be a whole number >= 1"),
    (lambda L, xy: diffupose.load_lifter("/nonexistent/model"), "checkpoint not found"),
    (lambda L, xy: diffupose.load_lifter(device="tpu"), "--device 'tpu' is not a torch device"),
    (lambda L, xy: diffupose.load_lifter(smooth="kalman"), "smooth 'kalman': expected one of none, oneeuro"),
    (lambda L, xy: diffupose.load_lifter(smooth="oneeuro", fps=0), "fps must be a positive number"),
    (lambda L, xy: diffupose.load_lifter(smooth="oneeuro", smooth_beta=-1), "smooth_beta must be a number >= 0"),
    (lambda L, xy: api.check_output_skeleton("p.bvh", ("pelvis", "tail"), (-1, 0)), "output p.bvh: BVH export"),
])
def test_refusals_are_one_line_value_errors(lifter, call, match):
    with pytest.raises(ValueError) as e:
        call(lifter, coco_pixels())
    assert isinstance(e.value, (KeypointError, api.LiftError))
    assert match in str(e.value) and "\n" not in str(e.value)


def test_warnings_are_issued_and_kept(lifter):
    xy = coco_pixels()
    xy[4, 9] = [1e30, 1e30]  # a detector's garbage: off the image, stood in for, frame unreliable
    with pytest.warns(UserWarning) as caught:
        res = lifter.lift(xy, layout="coco17", image_size=IMG)
    issued = [str(w.message) for w in caught]
    assert issued == res.warnings and len(issued) == 2
    assert "1 joints in 1 frames lie more than one image size outside" in issued[0]
    assert "1 of 8 frames are unreliable" in issued[1]
    assert res.unreliable.tolist() == [i == 4 for i in range(8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lifter.lift(xy, layout="coco17", image_size=IMG, warn=False)


def test_clip_writers_hook(tmp_path, lifter, monkeypatch, capsys):
    """A format registered in keypoints.writers.CLIP_WRITERS is written by Lifted.save and by
    `diffupose lift -o OUT.<suffix>` from the whole clip."""
    got = []

    def fake_writer(res, path):
        got.append((res.pose3d.shape, Path(path).suffix))
        Path(path).write_text("ok")

    monkeypatch.setattr(W, "CLIP_WRITERS", {})
    W.register_clip_writer("fake", fake_writer)
    xy = coco_pixels()
    res = lifter.lift(xy, layout="coco17", image_size=IMG)
    assert res.save(tmp_path / "a.fake").read_text() == "ok"
    res.save(tmp_path / "a.json")
    np.testing.assert_allclose(read_lift_output(tmp_path / "a.json").pose3d, res.pose3d, atol=1e-5)
    np.save(tmp_path / "kp.npy", xy)
    rc = cli.main(["lift", str(tmp_path / "kp.npy"), "--layout", "coco17", "--image-size", *map(str, IMG), "-n", "3",
                   "--steps", "2", "-q", "-o", str(tmp_path / "b.fake")])
    assert rc == 0, capsys.readouterr().err
    assert got == [((8, 17, 3), ".fake")] * 2 and (tmp_path / "b.fake").read_text() == "ok"
    with pytest.raises(ValueError, match="written by LiftWriter"):
        W.register_clip_writer(".npz", fake_writer)
    with pytest.raises(KeypointError, match="unknown format '.fbx'"):  # .bvh / .csv: LiftWriter (export.py)
        res.save(tmp_path / "a.fbx")


def test_smoothing_is_the_same_through_lift_save_and_lift_to_file(tmp_path, lifter):
    """smooth= on load_lifter: the aggregate is filtered in iter_lift, batch by batch with the
    filter's state carried across (batch_size 3: the same poses as filtering the whole clip at
    once, frames left out by skip_empty being longer steps); lift(), Lifted.save and
    lift_to_file agree; the hypotheses are left as lifted; the settings are recorded."""
    from diffupose.export import DEFAULT_FPS
    from diffupose.smoothing import OneEuroFilter

    xy = coco_pixels(12)
    xy[5] = 0  # no person: left out, a gap of two frame times
    notes = []
    smooth = diffupose.load_lifter(**FAST, batch_size=3, smooth="oneeuro", smooth_beta=1.0, on_note=notes.append)
    raw = diffupose.load_lifter(**FAST, batch_size=3).lift(xy, layout="coco17", image_size=IMG, skip_empty=True)
    res = smooth.lift(xy, layout="coco17", image_size=IMG, skip_empty=True)
    assert 5 not in res.frame_index.tolist() and len(res.frame_index) == 11
    np.testing.assert_array_equal(res.hypotheses, raw.hypotheses)
    want = OneEuroFilter(DEFAULT_FPS, beta=1.0)(raw.pose3d, raw.frame_index).astype(np.float32)
    np.testing.assert_array_equal(res.pose3d, want)
    assert not np.array_equal(res.pose3d, raw.pose3d)
    st = res.meta["settings"]
    assert st["smooth"]["filter"] == "oneeuro" and st["smooth"]["beta"] == 1.0
    assert (st["fps"], st["fps_source"]) == (DEFAULT_FPS, "assumed") and res.settings == st
    assert any("assuming 30 frames/s" in n for n in notes) and any("assuming" in n for n in res.notes)
    assert raw.meta["settings"]["smooth"] == {"filter": "none"}
    inp = api.read_input(xy, layout="coco17", image_size=IMG, skip_empty=True)
    smooth.lift_to_file(inp, tmp_path / "f.npz")
    np.testing.assert_array_equal(read_lift_output(tmp_path / "f.npz").pose3d, res.pose3d)
    smooth.lift_to_file(inp, tmp_path / "f.csv")
    res.save(tmp_path / "s.csv")
    assert (tmp_path / "f.csv").read_text() == (tmp_path / "s.csv").read_text()
    given = diffupose.load_lifter(**FAST, smooth="oneeuro", fps=20).lift(xy[:4], layout="coco17", image_size=IMG)
    assert (given.settings["fps"], given.settings["fps_source"]) == (20.0, "given")

