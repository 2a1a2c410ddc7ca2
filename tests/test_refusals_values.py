"""A corpus of bad VALUES (issue 11, parts 3, 5, 6): keypoints far off the image or with scores that
mean nothing, checkpoints whose config or tensors are out of range, runs interrupted by SIGTERM,
Ctrl-C or SIGKILL. Each either is refused (status 1, one line naming the file, no traceback, no
file written) or gives the documented flags (weak joints, `unreliable` frames, a warning), never
a pose that looks certain and is metres off. Most go through `diffupose.cli.main` (the command in
process); the signals through `python -m diffupose` in a child process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diffupose import cli
from diffupose.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from diffupose.diffusion import DiffusionConfig
from diffupose.keypoints import check_keypoints, prepare_chunk, read_keypoints, remove_stale_temporaries
from diffupose.model import ModelConfig, build_model
from diffupose.skeleton import H36M17
from tests.test_keypoints import bodies, project

WT = Path(__file__).resolve().parent.parent
W, H = 1920, 1080
FAST = ["-n", "3", "--steps", "2", "--backend", "reference", "-q"]
F = 6

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_refused(rc, err, match, folder: Path, before: set):
    """Status 1, one line `diffupose <cmd>: error: ...` holding `match`, no traceback, nothing new
    in `folder`."""
    assert rc == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip() and ": note:" not in ln]
    assert len(lines) == 1 and lines[0].startswith("diffupose ") and ": error: " in lines[0], err
    assert match in lines[0], err
    assert "Traceback" not in err
    assert set(os.listdir(folder)) == before, "a refused run wrote something"


def warnings_of(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ": warning: " in ln]


def clean_keypoints(seed=3) -> np.ndarray:
    """[F, 17, 3] Human3.6M-ordered pixels of a 1920 x 1080 video with scores 0.9."""
    xy = project(bodies("h36m17", F, seed=seed), W, H, f=1100)
    return np.concatenate([xy, np.full((F, 17, 1), 0.9)], -1)


def save(tmp_path, name, a) -> Path:
    p = tmp_path / name
    np.save(p, a)
    return p


def lift_argv(inp, out, ckpt, *extra):
    return ["lift", inp, "--layout", "h36m17", "--image-size", W, H, "-o", out, "--checkpoint", ckpt, *FAST, *extra]


def load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _tiny(path, *, dcfg=None, **model_kw):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{"d_model": 16, "n_blocks": 1, "d_time": 8, **model_kw}))
    save_checkpoint(path, model, dcfg or DiffusionConfig(T=20, clip_x0=2.0, pose_scale=0.25))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(_tiny(tmp_path_factory.mktemp("ckpt") / "tiny"))


@pytest.fixture(scope="module")
def clean_lift(tmp_path_factory):
    """The clean clip lifted by the shipped (trained) checkpoint: the reference the bad values are
    compared with."""
    d = tmp_path_factory.mktemp("clean")
    inp = save(d, "kp.npy", clean_keypoints())
    assert cli.main([str(a) for a in lift_argv(inp, d / "o.npz", cli.DEFAULT_CHECKPOINT)]) == 0
    return load(d / "o.npz")


# ---------------------------------------------------------------------------------------------
# 3. bad keypoint values
# ---------------------------------------------------------------------------------------------
J_WRIST, J_ANKLE = H36M17.index("l_wrist"), H36M17.index("r_ankle")


@pytest.mark.parametrize("case", ["one joint at 1e30", "one joint 9000 px away", "one joint at -1e30 in y"])
def test_a_garbage_joint_is_flagged_and_does_not_move_the_pose(tmp_path, clean_lift, case, capsys):
    """Lifted with the trained checkpoint: the frame is flagged unreliable, the joint weak, and the
    pose stays where the clean frame's is (the raw value fed to the model put it 1.6 m off, spread 0)."""
    a = clean_keypoints()
    f, j = 2, J_WRIST
    if case == "one joint at 1e30":
        a[f, j, :2] = 1e30
    elif case == "one joint 9000 px away":
        f, j = 3, J_ANKLE
        a[f, j, 0] += 9000
    else:
        a[f, j, 1] = -1e30
    out = tmp_path / "o.npz"
    rc, stdout, err = run(lift_argv(save(tmp_path, "kp.npy", a), out, cli.DEFAULT_CHECKPOINT), capsys)
    assert rc == 0, err
    z = load(out)
    np.testing.assert_array_equal(z["unreliable"], np.arange(F) == f)
    assert z["weak"][f, j] and z["weak"].sum() == 1
    assert np.abs(z["pose2d"]).max() < 2  # the model was never fed the garbage
    assert np.isfinite(z["keypoints2d"]).all() and np.abs(z["keypoints2d"]).max() < 2 * W
    off = np.linalg.norm(z["pose3d"][f] - clean_lift["pose3d"][f], axis=-1)
    assert off.mean() < 0.1, off  # metres
    assert z["spread"][f].mean() > 0.02  # not collapsed to a falsely certain 0
    np.testing.assert_array_equal(z["pose3d"][f + 1:], clean_lift["pose3d"][f + 1:])  # other frames untouched
    w = warnings_of(err)
    assert len(w) == 2 and "more than one image size outside the 1920 x 1080 image" in w[0], err
    assert "1 of 6 frames are unreliable" in w[1] and "frames " + str(f) in w[1]
    assert "1 unreliable frames" in stdout


def test_a_frame_without_a_usable_joint_is_refused(tmp_path, tiny, capsys):
    a = clean_keypoints()
    a[4, :, :2] = -1e30
    inp = save(tmp_path, "kp.npy", a)
    out = tmp_path / "o.npz"
    before = set(os.listdir(tmp_path))
    rc, _, err = run(lift_argv(inp, out, tiny), capsys)
    assert_refused(rc, err, "1 of 6 frames have no usable joint", tmp_path, before)
    assert "frames 4" in err and "--skip-empty" in err and str(inp) in err


def test_skip_empty_leaves_out_a_frame_without_a_usable_joint(tmp_path, tiny, capsys):
    a = clean_keypoints()
    a[4, :, :2] = -1e30
    a[1, :8, :2] = 0  # undetected joints ...
    a[1, 8:, 0] = 5 * W  # ... and the rest far off: nothing usable either
    out = tmp_path / "o.npz"
    rc, _, err = run(lift_argv(save(tmp_path, "kp.npy", a), out, tiny, "--skip-empty"), capsys)
    assert rc == 0, err
    z = load(out)
    np.testing.assert_array_equal(z["frame_index"], [0, 2, 3, 5])
    assert not z["unreliable"].any()
    assert json.loads(str(z["meta"]))["input"]["frames_skipped_empty"] == 2


@pytest.mark.parametrize("score", [0.0, -1.0])
def test_all_zero_scores_are_warned_of(tmp_path, tiny, score, capsys):
    a = clean_keypoints()
    a[..., 2] = score
    out = tmp_path / "o.npz"
    rc, _, err = run(lift_argv(save(tmp_path, "kp.npy", a), out, tiny), capsys)
    assert rc == 0, err
    z = load(out)
    assert z["weak"].all() and z["unreliable"].all()
    w = warnings_of(err)
    assert any(f"every detector score is {score:g} or below" in x for x in w), err
    assert any("6 of 6 frames are unreliable" in x for x in w), err


def test_warnings_are_shown_with_quiet_and_notes_are_not(tmp_path, tiny, capsys):
    a = clean_keypoints()
    a[0, 3, :2] = 0  # undetected: a note
    a[5, 3, 0] = 1e30  # off the image: a warning
    rc, _, err = run(lift_argv(save(tmp_path, "kp.npy", a), tmp_path / "o.npz", tiny), capsys)  # FAST has -q
    assert rc == 0 and ": note:" not in err and len(warnings_of(err)) == 2, err
    z = load(tmp_path / "o.npz")
    np.testing.assert_array_equal(z["unreliable"], [True, False, False, False, False, True])


def test_mostly_weak_frames_are_unreliable(tmp_path, tiny, capsys):
    a = clean_keypoints()
    a[2, :9, 2] = 0.1  # 9 of 17 below --min-score 0.3
    a[3, :8, 2] = 0.1  # 8 of 17: weak joints, the frame still counts
    rc, _, err = run(lift_argv(save(tmp_path, "kp.npy", a), tmp_path / "o.npz", tiny), capsys)
    assert rc == 0, err
    z = load(tmp_path / "o.npz")
    np.testing.assert_array_equal(z["unreliable"], np.arange(F) == 2)
    assert z["weak"].sum() == 17


def test_normalized_input_with_a_garbage_joint(tmp_path, tiny, capsys):
    a = clean_keypoints()[..., :2] / W * 2 - [1, H / W]
    a[1, 5] = [1e30, 0.1]
    rc, _, err = run(["lift", save(tmp_path, "kp.npy", a), "--layout", "h36m17", "--normalized", "-o",
                      tmp_path / "o.json", "--checkpoint", tiny, *FAST], capsys)
    assert rc == 0, err
    doc = json.loads((tmp_path / "o.json").read_text())
    assert [fr["unreliable"] for fr in doc["frames"]] == [False, True, False, False, False, False]
    assert doc["frames"][1]["weak"][5] is True
    assert "beyond +-4 in normalised units" in err


def test_normalized_frame_without_a_usable_joint(tmp_path, tiny, capsys):
    a = clean_keypoints()[..., :2] / W * 2 - [1, H / W]
    a[2] = 50.0
    before = set(os.listdir(tmp_path))
    inp = save(tmp_path, "kp.npy", a)
    before.add(inp.name)
    rc, _, err = run(["lift", inp, "--layout", "h36m17", "--normalized", "-o", tmp_path / "o.npz",
                      "--checkpoint", tiny, *FAST], capsys)
    assert_refused(rc, err, "1 of 6 frames have no usable joint (every joint undetected or beyond +-4", tmp_path,
                   before)


def test_a_wrong_image_size_is_still_named_as_such(tmp_path, tiny, capsys):
    """Every joint off a too-small image is a wrong --image-size, not a clip of garbage frames."""
    inp = save(tmp_path, "kp.npy", clean_keypoints())
    before = set(os.listdir(tmp_path))
    rc, _, err = run(["lift", inp, "--layout", "h36m17", "--image-size", 300, 200, "-o", tmp_path / "o.npz",
                      "--checkpoint", tiny, *FAST], capsys)
    assert_refused(rc, err, "far outside the 300 x 200 image", tmp_path, before)


def test_python_callers_get_the_same_checks(tmp_path):
    """check_keypoints + prepare_chunk (what `diffupose lift` calls) flag, replace and refuse alike."""
    a = clean_keypoints()
    a[2, J_WRIST, :2] = 1e30
    kp = read_keypoints(save(tmp_path, "kp.npy", a))
    plan = check_keypoints(kp, image_size=(W, H), normalized=False, skip_empty=False)
    assert plan.off_image_joints == 1 and plan.frames_with_off_image == 1 and len(plan.warnings) == 1
    c = prepare_chunk(kp, plan.frames, plan, "h36m17", "h36m17", min_score=0.3)
    np.testing.assert_array_equal(c.unreliable, np.arange(F) == 2)
    assert c.missing[2, J_WRIST] and c.weak[2, J_WRIST]
    elbow = H36M17.index("l_elbow")
    np.testing.assert_allclose(c.keypoints2d[2, J_WRIST], a[2, elbow, :2], rtol=1e-6)  # the stand-in
    a[3] = -1e30
    from diffupose.keypoints import KeypointError

    with pytest.raises(KeypointError, match="no usable joint"):
        check_keypoints(read_keypoints(save(tmp_path, "kp2.npy", a)), image_size=(W, H), normalized=False,
                        skip_empty=False)


# ---------------------------------------------------------------------------------------------
# 5. checkpoints
# ---------------------------------------------------------------------------------------------
def _edit_config(path: Path, edit) -> None:
    cfg = json.loads(path.with_suffix(".json").read_text())
    edit(cfg)
    path.with_suffix(".json").write_text(json.dumps(cfg))  # json writes NaN / Infinity as Python reads them


def _int_weights(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path.with_suffix(".safetensors")))
    save_file({k: (v * 100).to(torch.int32) for k, v in state.items()}, str(path.with_suffix(".safetensors")))


CHECKPOINT_CASES = {
    "integer weights": (_int_weights, "weights must be floating point"),
    "pose_scale 1e30": (lambda p: _edit_config(p, lambda c: c["diffusion"].update(pose_scale=1e30)),
                        "pose_scale must be within (0, 10], got 1e+30"),
    "pose_scale NaN": (lambda p: _edit_config(p, lambda c: c["diffusion"].update(pose_scale=float("nan"))),
                       "pose_scale must be a finite number"),
    "pose_scale 0": (lambda p: _edit_config(p, lambda c: c["diffusion"].update(pose_scale=0)),
                     "pose_scale must be within (0, 10]"),
    "d_model 20000": (lambda p: _edit_config(p, lambda c: c["model"].update(d_model=20000)),
                      "d_model must be within [1, 4096], got 20000"),
    "40 blocks": (lambda p: _edit_config(p, lambda c: c["model"].update(n_blocks=40)),
                  "does not match the architecture"),
    "T 1e9 (a float)": (lambda p: _edit_config(p, lambda c: c["diffusion"].update(T=1e9)),
                        "T must be a whole number"),
    "T 10**9": (lambda p: _edit_config(p, lambda c: c["diffusion"].update(T=10 ** 9)),
                "T must be within [1, 10000]"),
    "d_model true": (lambda p: _edit_config(p, lambda c: c["model"].update(d_model=True)),
                     "d_model must be a whole number"),
    "cosine_s Infinity": (lambda p: _edit_config(p, lambda c: c["diffusion"].update(cosine_s=float("inf"))),
                          "cosine_s must be a finite number"),
    "negative clip": (lambda p: _edit_config(p, lambda c: c["diffusion"].update(clip_x0=-1)),
                      "clip_x0 must be within [0, 1000]"),
    "unknown act": (lambda p: _edit_config(p, lambda c: c["model"].update(act="gelu")), "unknown act 'gelu'"),
}


@pytest.mark.parametrize("name", list(CHECKPOINT_CASES))
def test_bad_checkpoint_values_are_refused(tmp_path, name, capsys):
    ck = _tiny(tmp_path / "ck" / "model")
    edit, match = CHECKPOINT_CASES[name]
    edit(ck)
    inp = save(tmp_path, "kp.npy", clean_keypoints())
    before = set(os.listdir(tmp_path))
    rc, _, err = run(lift_argv(inp, tmp_path / "o.npz", ck), capsys)
    assert_refused(rc, err, match, tmp_path, before)
    assert "unusable checkpoint" in err and ("model.json" in err or "model.safetensors" in err)


def test_a_huge_config_is_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    """Shapes come from the safetensors header and a model built on the meta device: no real
    model is built before the weights are known to match."""
    import diffupose.checkpoint as C

    ck = _tiny(tmp_path / "model")
    _edit_config(ck, lambda c: c["model"].update(d_model=4096, n_blocks=64))  # within range, 8.6e9 parameters
    devices = []
    real = C.build_model

    def spy(cfg):
        devices.append(torch.empty(0).device.type)  # the default device where it is built
        return real(cfg)

    monkeypatch.setattr(C, "build_model", spy)
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="does not match the architecture .*d_model 4096, 64 blocks"):
        load_checkpoint(ck)
    assert devices == ["meta"] and time.perf_counter() - t0 < 30


def test_half_precision_weights_still_load(tmp_path):
    """Not over-refused: fp16 weights are floating point (cast to the model's fp32 exactly)."""
    from safetensors.torch import load_file, save_file

    ck = _tiny(tmp_path / "model")
    state = load_file(str(ck.with_suffix(".safetensors")))
    save_file({k: v.half() for k, v in state.items()}, str(ck.with_suffix(".safetensors")))
    model, _, _ = load_checkpoint(ck)
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v.half().float()), k


# ---------------------------------------------------------------------------------------------
# 6. interrupted runs
# ---------------------------------------------------------------------------------------------
def _slow_lift(tmp_path, tiny):
    """A lift that takes many seconds: many frames, many hypotheses, all DDPM steps."""
    xy = project(bodies("h36m17", 4000, seed=5), W, H, f=1100).astype(np.float32)
    inp = save(tmp_path, "kp.npy", xy)
    out = tmp_path / "o.npz"
    out.write_bytes(b"the earlier output")
    argv = [sys.executable, "-m", "diffupose", "lift", str(inp), "--layout", "h36m17", "--image-size", str(W),
            str(H), "-o", str(out), "--checkpoint", tiny, "-n", "64", "--sampler", "ddpm", "--backend",
            "reference", "--batch-size", "64", "-q"]
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    # SIGINT as in a terminal, even where this test runs as a background job (which ignores it)
    proc = subprocess.Popen(argv, cwd=WT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not any(p.name.startswith(".o.npz.part-") for p in tmp_path.iterdir()):  # the writer is writing
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"the lift did not start writing: {proc.communicate()}")
        time.sleep(0.05)
    time.sleep(0.3)
    return proc, out


@pytest.mark.parametrize("sig,rc,word", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                         (signal.SIGINT, 130, "interrupted")])
def test_sigterm_and_ctrl_c_end_cleanly(tmp_path, tiny, sig, rc, word):
    proc, out = _slow_lift(tmp_path, tiny)
    proc.send_signal(sig)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == rc, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("diffupose lift: ") and word in lines[0], err
    assert "Traceback" not in err
    assert out.read_bytes() == b"the earlier output"
    assert sorted(os.listdir(tmp_path)) == ["kp.npy", "o.npz"]  # no temporaries left


def test_sigkill_leftovers_are_removed_by_the_next_lift(tmp_path, tiny, capsys):
    proc, out = _slow_lift(tmp_path, tiny)
    proc.kill()
    proc.communicate(timeout=60)
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".o.npz.part-")]
    assert len(left) == 1 and any(left[0].iterdir())  # what SIGKILL leaves: nothing could clean up
    assert out.read_bytes() == b"the earlier output"
    small = save(tmp_path, "small.npy", clean_keypoints())
    rc, _, err = run(lift_argv(small, out, tiny), capsys)
    assert rc == 0, err
    assert sorted(os.listdir(tmp_path)) == ["kp.npy", "o.npz", "small.npy"]


def test_only_stale_temporaries_are_removed(tmp_path):
    from diffupose.keypoints import _host_tag

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "o.npz"
    host = _host_tag()

    def folder(name, age=0.0, files=("pose3d.npy",)):
        d = tmp_path / name
        d.mkdir()
        for f in files:
            (d / f).write_bytes(b"x")
        t = time.time() - age
        os.utime(d, (t, t))
        return d

    gone = [folder(f".o.npz.part-{host}-{dead.pid}-abc"),  # this host, its process is gone
            folder(f".o.npz.part-otherhost-{os.getpid()}-abc", age=2 * 86400),  # another host's, days old
            folder(".o.npz.k3j_9xq2", age=2 * 86400)]  # an untagged one of an older version, days old
    kept = [folder(f".o.npz.part-{host}-{os.getpid()}-abc"),  # a live lift (this process)
            folder(f".o.npz.part-otherhost-{dead.pid}-abc"),  # another host's, recent: its pid means nothing here
            folder(".o.npz.k3j_9xq3"),  # untagged but recent
            folder(".o.npz.mynotes", age=2 * 86400),  # not ours at all
            folder(".o.npz.k3j_9xq4", age=2 * 86400, files=("holiday.jpg",)),  # untagged, holds a user's file
            folder(".other.npz.part-x-1-abc", age=2 * 86400)]  # another output's
    removed = remove_stale_temporaries(out)
    assert sorted(removed) == sorted(gone)
    assert all(not d.exists() for d in gone) and all(d.exists() for d in kept)
