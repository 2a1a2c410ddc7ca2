"""The `diffupose` command: lift, viz, eval and demo end to end on a tiny checkpoint (eval and demo
on a small subsample of the embedded CMU set), every bad input ending in one clear line and a
non-zero status, help text, import-mocap's wiring."""
import argparse
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from diffupose import cli
from diffupose.checkpoint import save_checkpoint
from diffupose.diffusion import DiffusionConfig
from diffupose.keypoints import COCO17_JOINTS
from diffupose.model import ModelConfig, build_model
from diffupose.skeleton import H36M17
from tests.test_keypoints import bodies, coco_results, project

W, H = 1000, 800
FAST = ["-n", "3", "--steps", "2", "--backend", "reference", "-q"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _save_tiny(path, **model_kw):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{"d_model": 16, "n_blocks": 1, "d_time": 8, **model_kw}))
    # clip_x0 keeps an untrained model's samples bounded (a trained one needs no help)
    save_checkpoint(path, model, DiffusionConfig(T=20, clip_x0=2.0, pose_scale=0.25), dataset={"name": "test"})
    return str(path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture
def coco_json(tmp_path):
    doc = coco_results(project(bodies("coco17", 12, seed=1), W, H))
    doc[4]["keypoints"][3 * COCO17_JOINTS.index("r_hip") + 2] = 0.05  # a weak hip
    p = tmp_path / "kp.json"
    p.write_text(json.dumps(doc[::-1]))  # out of order: frames follow image_id
    return p


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def lift_npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------------------------------------
# lift
# ---------------------------------------------------------------------------------------------
def test_lift_coco_json(tmp_path, ckpt, coco_json, capsys):
    out = tmp_path / "poses.npz"
    rc, stdout, err = run(["lift", coco_json, "--image-size", W, H, "-o", out, "--checkpoint", ckpt, *FAST,
                           "--batch-size", "5"], capsys)
    assert rc == 0, err
    assert "lifted 12 frames x 3 hypotheses" in stdout and str(out) in stdout
    z = lift_npz(out)
    F, N, J = 12, 3, 17
    assert z["pose3d"].shape == (F, J, 3) and z["hypotheses"].shape == (F, N, J, 3) and z["spread"].shape == (F, J)
    assert z["weak"].shape == (F, J) and z["weak"].dtype == bool and z["pose2d"].shape == (F, J, 2)
    for k in ("pose3d", "hypotheses", "spread"):
        assert np.isfinite(z[k]).all(), k
    root = H36M17.index("pelvis")
    assert not z["hypotheses"][:, :, root].any() and not z["pose3d"][:, root].any()  # root-relative
    np.testing.assert_allclose(z["pose3d"], z["hypotheses"].mean(1), atol=1e-6)
    dev = z["hypotheses"] - z["hypotheses"].mean(1, keepdims=True)
    np.testing.assert_allclose(z["spread"], np.sqrt((dev ** 2).sum(-1).mean(1)), atol=1e-6)
    # metres: an untrained model's poses are bounded by clip_x0 * pose_scale per coordinate (plus the root shift)
    assert np.abs(z["hypotheses"]).max() <= 2 * 2.0 * 0.25 + 1e-5
    np.testing.assert_array_equal(z["frame_id"], np.arange(12))  # ordered by image_id
    np.testing.assert_array_equal(z["frame_index"], np.arange(12))
    assert tuple(z["joint_names"]) == H36M17.joints
    # the weak hip of image 4 flags it and the joints made from it
    weak = {(int(f), H36M17.joints[j]) for f, j in zip(*np.nonzero(z["weak"]))}
    assert weak == {(4, "r_hip"), (4, "pelvis"), (4, "spine")}
    # the 2D input, normalised as documented
    xy = project(bodies("coco17", 12, seed=1), W, H)
    c = {n: i for i, n in enumerate(COCO17_JOINTS)}
    pelvis = 0.5 * (xy[:, c["l_hip"]] + xy[:, c["r_hip"]])
    np.testing.assert_allclose(z["keypoints2d"][:, root], pelvis, rtol=1e-5)
    np.testing.assert_allclose(z["pose2d"][:, root], pelvis / W * 2 - [1, H / W], atol=1e-5)
    meta = json.loads(str(z["meta"]))
    assert meta["settings"] == {**meta["settings"], "hypotheses": 3, "steps": 2, "sampler": "ddim", "flip": False,
                                "aggregate": "mean", "seed": 0, "batch_size": 5, "backend": "reference",
                                "dtype": "fp32", "device": "cpu"}
    assert meta["input"]["layout"] == "coco17" and meta["input"]["image_size"] == [W, H]
    assert meta["input"]["mapping"]["pelvis"] == ["l_hip", "r_hip"] and "approximate" in meta["input"]["mapping_note"]
    assert meta["checkpoint"]["path"].endswith("tiny.safetensors") and len(meta["checkpoint"]["weights_sha256"]) == 64
    assert meta["checkpoint"]["model"]["d_model"] == 16 and meta["checkpoint"]["dataset"] == {"name": "test"}
    assert meta["units"] == "metres" and meta["joint_names"] == list(H36M17.joints)
    assert sorted(os.listdir(tmp_path)) == ["kp.json", "poses.npz"]  # no temporaries left


def test_lift_seeds_json_output_and_median(tmp_path, ckpt, coco_json, capsys):
    base = ["lift", coco_json, "--image-size", W, H, "--checkpoint", ckpt, *FAST]
    assert run([*base, "-o", tmp_path / "a.npz"], capsys)[0] == 0
    assert run([*base, "-o", tmp_path / "b.npz"], capsys)[0] == 0
    assert run([*base, "-o", tmp_path / "c.npz", "--seed", "1"], capsys)[0] == 0
    a, b, c = (lift_npz(tmp_path / f"{n}.npz") for n in "abc")
    np.testing.assert_array_equal(a["hypotheses"], b["hypotheses"])
    assert not np.allclose(a["hypotheses"], c["hypotheses"])
    assert run([*base, "-o", tmp_path / "a.json"], capsys)[0] == 0
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["format"] == "diffupose-lift" and doc["meta"]["settings"]["seed"] == 0 and len(doc["frames"]) == 12
    np.testing.assert_allclose(np.array([f["hypotheses"] for f in doc["frames"]]), a["hypotheses"], atol=1e-5)
    assert [f["id"] for f in doc["frames"]] == list(range(12))
    rc, _, err = run([*base[:-1], "-o", tmp_path / "d.npz", "--sampler", "ddpm"], capsys)
    assert rc == 0 and "--steps is ignored by --sampler ddpm (it takes all 20 steps)" in err
    assert json.loads(str(lift_npz(tmp_path / "d.npz")["meta"]))["settings"]["steps"] == 20
    assert run([*base, "-o", tmp_path / "m.npz", "--aggregate", "median", "-n", "4"], capsys)[0] == 0
    m = lift_npz(tmp_path / "m.npz")
    np.testing.assert_allclose(m["pose3d"], torch.from_numpy(m["hypotheses"]).median(1).values.numpy())


def test_lift_streams_npy_csv_and_skips_empty(tmp_path, ckpt, capsys):
    xy = project(bodies("h36m17", 23, seed=2), W, H).astype(np.float32)
    xy[[3, 17]] = 0  # detector misses
    np.save(tmp_path / "kp.npy", xy)
    out = tmp_path / "o.npz"
    argv = ["lift", tmp_path / "kp.npy", "--image-size", W, H, "-o", out, "--checkpoint", ckpt, *FAST[:-1]]
    rc, _, err = run(argv, capsys)
    assert rc == 1 and "2 of 23 frames are empty" in err and "frames 3, 17" in err and not out.exists()
    rc, _, err = run([*argv, "--skip-empty", "--batch-size", "4", "--flip"], capsys)
    assert rc == 0, err
    assert "skipped 2 empty frames" in err and "layout h36m17 (from the bone lengths" in err
    z = lift_npz(out)
    np.testing.assert_array_equal(z["frame_index"], [i for i in range(23) if i not in (3, 17)])
    assert z["hypotheses"].shape == (21, 3, 17, 3) and "score" not in z and "frame_id" not in z
    meta = json.loads(str(z["meta"]))
    assert meta["input"]["frames_skipped_empty"] == 2 and meta["settings"]["flip"] is True
    # the same keypoints as CSV with a header, already normalised
    norm = xy[[0, 1, 2]] / W * 2 - [1, H / W]
    header = ",".join(f"{j}_{c}" for j in H36M17.joints for c in "xy")
    np.savetxt(tmp_path / "kp.csv", norm.reshape(3, -1), delimiter=",", header=header, comments="")
    rc, _, err = run(["lift", tmp_path / "kp.csv", "--normalized", "--layout", "h36m17", "-o", tmp_path / "c.npz",
                      "--checkpoint", ckpt, *FAST], capsys)
    assert rc == 0, err
    np.testing.assert_allclose(lift_npz(tmp_path / "c.npz")["pose2d"], norm, atol=1e-5)


def test_lift_auto_backend_resolves_to_one_that_runs(tmp_path, ckpt, coco_json, capsys):
    rc, _, err = run(["lift", coco_json, "--image-size", W, H, "-o", tmp_path / "o.npz", "--checkpoint", ckpt,
                      "-n", "2", "--steps", "1"], capsys)
    assert rc == 0, err
    backend = json.loads(str(lift_npz(tmp_path / "o.npz")["meta"]))["settings"]["backend"]
    assert backend in ("cpu", "reference")


def test_pick_backend_falls_back(monkeypatch, ckpt):
    from diffupose.ops import backend as B

    model, diffusion, _, _ = cli.load_model(ckpt, torch.device("cpu"))
    monkeypatch.setattr(B, "has_extension", lambda: True)  # claims the C++ ops, whose call then fails

    def broken(*a, **k):
        raise RuntimeError("Could not run 'diffupose::mgcn_fwd' with arguments from the 'CPU' backend. more")

    notes = []
    rep = types.SimpleNamespace(note=notes.append)
    import diffupose.engine as engine

    monkeypatch.setattr(engine, "Lifter", broken)
    assert cli.pick_backend("auto", model, diffusion, torch.device("cpu"), torch.float32, rep) == "reference"
    assert len(notes) == 1 and "backend 'cpu' does not run here (Could not run 'diffupose::mgcn_fwd'" in notes[0]
    monkeypatch.setattr(B, "extension", lambda: None)
    with pytest.raises(cli.CliError, match="--backend cpu does not run here .*use --backend auto or reference"):
        cli.pick_backend("cpu", model, diffusion, torch.device("cpu"), torch.float32, rep)


# ---------------------------------------------------------------------------------------------
# bad input: one line on stderr, status 1, no output file, no traceback
# ---------------------------------------------------------------------------------------------
def _bad_checkpoints(tmp: Path) -> dict[str, tuple[str, str]]:
    """name -> (checkpoint argument, expected message)."""
    out = {}
    reg = _save_tiny(tmp / "reg", arch="regressor")
    out["regressor"] = (reg, "deterministic regressor")
    he = _save_tiny(tmp / "he", skeleton="humaneva15")
    out["other skeleton"] = (he, "cannot map coco17 keypoints to the checkpoint's humaneva15 skeleton")
    wide = _save_tiny(tmp / "wide")
    cfg = json.loads(Path(wide + ".json").read_text())
    cfg["model"]["d_model"] = 32  # config of another architecture than the weights
    Path(wide + ".json").write_text(json.dumps(cfg))
    out["mismatched weights"] = (wide, "does not match the architecture")
    corrupt = _save_tiny(tmp / "corrupt")
    data = bytearray(Path(corrupt + ".safetensors").read_bytes())
    Path(corrupt + ".safetensors").write_bytes(bytes(data[: len(data) // 2]))
    out["truncated weights"] = (corrupt, "not a readable safetensors file")
    evil = _save_tiny(tmp / "evil")

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    import pickle

    Path(evil + ".safetensors").write_bytes(pickle.dumps({"w": Boom()}))
    out["pickle payload"] = (evil, "not a readable safetensors file")
    foreign = tmp / "foreign"
    foreign.with_suffix(".json").write_text(json.dumps({"format": "something-else"}))
    foreign.with_suffix(".safetensors").write_bytes(b"")
    out["foreign config"] = (str(foreign), "not a diffupose checkpoint config")
    out["missing"] = (str(tmp / "nope"), "checkpoint not found")
    return out


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
    return _bad_checkpoints(tmp_path_factory.mktemp("badckpt"))


@pytest.mark.parametrize("name", ["regressor", "other skeleton", "mismatched weights", "truncated weights",
                                  "pickle payload", "foreign config", "missing"])
def test_bad_checkpoints(tmp_path, coco_json, bad_checkpoints, name, capsys):
    path, match = bad_checkpoints[name]
    out = tmp_path / "o.npz"
    rc, stdout, err = run(["lift", coco_json, "--image-size", W, H, "-o", out, "--checkpoint", path, *FAST], capsys)
    _assert_one_line_error(rc, err, match)
    assert not out.exists()


def test_missing_shipped_checkpoint_names_the_fix(tmp_path, coco_json, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEFAULT_CHECKPOINT", tmp_path / "assets" / "cmu_gcn")
    rc, _, err = run(["lift", coco_json, "--image-size", W, H, "-o", tmp_path / "o.npz", *FAST], capsys)
    _assert_one_line_error(rc, err, "shipped checkpoint is missing")
    assert "--checkpoint" in err


def _assert_one_line_error(rc, err, match):
    assert rc == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip() and ": note:" not in ln]
    assert len(lines) == 1, err
    assert lines[0].startswith("diffupose ") and ": error: " in lines[0], err
    assert match in lines[0], err
    assert "Traceback" not in err


def _bad_inputs(tmp: Path) -> list[tuple[str, list, str]]:
    """(name, extra argv (input first), expected message) for inputs that must be refused."""
    xy = project(bodies("coco17", 5), W, H)
    good = coco_results(xy)

    def js(name, doc):
        p = tmp / name
        p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        return p

    def npy(name, a):
        np.save(tmp / name, a)
        return tmp / name

    nan = [dict(d) for d in good]
    nan[2] = {**nan[2], "keypoints": [float("nan")] + nan[2]["keypoints"][1:]}
    zero = [dict(d) for d in good]
    zero[1] = {**zero[1], "keypoints": [0.0] * 51}
    inf = xy.copy()
    inf[4, 2, 0] = np.inf
    h36m = project(bodies("h36m17", 5), W, H)
    size = ["--image-size", W, H]
    return [
        ("missing file", [tmp / "nope.json", *size], "input not found"),
        ("invalid json", [js("bad.json", "[{oops"), *size], "not valid JSON"),
        ("empty list", [js("empty.json", []), *size], "no frames"),
        ("wrong joint count", [js("j.json", [{"keypoints": [1.0] * 30}]), *size], "10 joints per frame"),
        ("wrong channels", [npy("c.npy", np.ones((4, 17, 5))), *size], "5 channels"),
        ("nan", [js("nan.json", nan), *size], "NaN or infinite values in image_ids 2"),
        ("inf", [npy("inf.npy", inf), "--layout", "coco17", *size], "NaN or infinite values in frames 4"),
        ("all-zero frame", [js("zero.json", zero), *size], "1 of 5 frames are empty"),
        ("empty npy", [npy("e.npy", np.zeros((0, 17, 2))), *size], "no frames"),
        ("no image size", [js("px.json", good)], "pass --image-size W H"),
        ("wrong image size", [js("px2.json", good), "--image-size", 200, 100], "far outside the 200 x 100 image"),
        ("layout contradicted", [npy("h.npy", h36m), "--layout", "coco17", *size], "look like h36m17 order"),
        ("h36m16 to h36m17", [npy("h16.npy", h36m[:, :16]), *size], "lacks the nose"),
        ("unknown format", [js("k.yaml", "x"), *size], "unknown input format"),
    ]


def test_bad_inputs(tmp_path, ckpt, capsys):
    for name, argv, match in _bad_inputs(tmp_path):
        out = tmp_path / "out.npz"
        rc, _, err = run(["lift", *argv, "-o", out, "--checkpoint", ckpt, *FAST], capsys)
        _assert_one_line_error(rc, err, match)
        assert not out.exists(), name


def test_bad_outputs(tmp_path, ckpt, coco_json, capsys):
    base = ["lift", coco_json, "--image-size", W, H, "--checkpoint", ckpt, *FAST]
    for out, match in [(tmp_path / "o.txt", "unknown format '.txt'"),
                       (tmp_path / "no" / "o.npz", "does not exist"),
                       (tmp_path, "unknown format"),
                       (Path("/sys/diffupose-test.npz") if os.geteuid() == 0 else None, "cannot write")]:
        if out is None:
            continue
        _assert_one_line_error(*run([*base, "-o", out], capsys)[::2], match)
    copy = tmp_path / "in.json"
    copy.write_text(coco_json.read_text())
    rc, _, err = run(["lift", copy, "--image-size", W, H, "--checkpoint", ckpt, *FAST, "-o", copy], capsys)
    _assert_one_line_error(rc, err, "is the input file")


def test_device_without_cuda(tmp_path, ckpt, coco_json, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc, _, err = run(["lift", coco_json, "--image-size", W, H, "-o", tmp_path / "o.npz", "--checkpoint", ckpt,
                      *FAST, "--device", "cuda"], capsys)
    _assert_one_line_error(rc, err, "no CUDA device is available")


@pytest.mark.parametrize("argv", [["lift", "x.json", "-o", "o.npz", "-n", "0"],
                                  ["lift", "x.json", "-o", "o.npz", "--steps", "two"],
                                  ["lift", "x.json"],
                                  ["lift", "x.json", "-o", "o.npz", "--image-size", "100", "-5"],
                                  ["lift", "x.json", "-o", "o.npz", "--sampler", "euler"],
                                  ["frobnicate"], []])
def test_usage_errors_exit_2(argv, capsys):
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "Traceback" not in err and err.strip()


# ---------------------------------------------------------------------------------------------
# viz
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lifted(tmp_path_factory, ckpt):
    d = tmp_path_factory.mktemp("lifted")
    doc = coco_results(project(bodies("coco17", 6, seed=4), W, H))
    doc[2]["keypoints"][3 * COCO17_JOINTS.index("l_wrist") + 2] = 0.0
    (d / "kp.json").write_text(json.dumps(doc))
    for ext in ("npz", "json"):
        rc = cli.main(["lift", str(d / "kp.json"), "--image-size", str(W), str(H), "-o", str(d / f"poses.{ext}"),
                       "--checkpoint", ckpt, *FAST])
        assert rc == 0
    return d


def test_viz_png_and_gif(tmp_path, lifted, capsys):
    from PIL import Image

    rc, out, err = run(["viz", lifted / "poses.npz", "-o", tmp_path / "f.png", "--frame", 2], capsys)
    assert rc == 0, err
    with Image.open(tmp_path / "f.png") as im:
        assert im.format == "PNG" and im.size[0] > 500
        px = np.asarray(im.convert("RGB"))
    assert (px < 250).mean() > 0.01  # something was drawn, not a blank canvas
    assert (np.abs(px[..., 0].astype(int) - px[..., 2]) > 100).any()  # the coloured limbs
    rc, out, err = run(["viz", lifted / "poses.json", "-o", tmp_path / "c.gif", "--stop", 3, "--fps", 5,
                        "--dpi", 40, "-q"], capsys)
    assert rc == 0, err
    with Image.open(tmp_path / "c.gif") as im:
        assert im.format == "GIF" and im.n_frames == 3
    assert sorted(os.listdir(tmp_path)) == ["c.gif", "f.png"]


def test_viz_errors(tmp_path, lifted, monkeypatch, capsys):
    from diffupose import viz

    monkeypatch.setattr(viz, "ffmpeg_available", lambda: False)
    _assert_one_line_error(*run(["viz", lifted / "poses.npz", "-o", tmp_path / "c.mp4"], capsys)[::2],
                           "needs ffmpeg")
    _assert_one_line_error(*run(["viz", lifted / "poses.npz", "-o", tmp_path / "f.png", "--frame", 99],
                                capsys)[::2], "has 6 rows")
    _assert_one_line_error(*run(["viz", lifted / "kp.json", "-o", tmp_path / "f.png"], capsys)[::2],
                           "not a diffupose lift output")
    _assert_one_line_error(*run(["viz", lifted / "poses.npz", "-o", tmp_path / "f.bmp"], capsys)[::2],
                           "unknown format '.bmp'")
    _assert_one_line_error(*run(["viz", lifted / "poses.npz", "-o", tmp_path / "c.gif", "--start", 9],
                                capsys)[::2], "no rows to draw")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# help, the module entry point, import-mocap
# ---------------------------------------------------------------------------------------------
def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def test_every_option_has_help_and_every_command_an_example(capsys):
    parser = cli.build_parser()
    commands = _subparsers(parser)
    assert set(commands) == {"lift", "viz", "eval", "calibrate", "import-mocap", "demo"}
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help and action.help.strip(), f"{name}: {action.option_strings or action.dest} has no help"
        rc, out, _ = run([name, "--help"], capsys)
        assert rc == 0 and "examples:" in out and f"diffupose {name}" in out.split("examples:")[1]


def test_python_dash_m(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    r = subprocess.run([sys.executable, "-m", "diffupose", "lift", "--help"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and "--image-size" in r.stdout
    r = subprocess.run([sys.executable, "-m", "diffupose", "lift", str(tmp_path / "nope.json"), "-o",
                        str(tmp_path / "o.npz"), "--image-size", "10", "10"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "input not found" in r.stderr


def test_import_mocap_is_wired_to_the_importer(tmp_path, monkeypatch, capsys):
    calls = []

    def import_mocap(inputs, out_dir, name, **kw):
        calls.append((inputs, out_dir, name, kw))
        if name == "bad":
            raise ValueError("walk.bvh:12: expected CHANNELS")
        return {"paths": {"3d": str(tmp_path / f"data_3d_{name}.npz")}}

    from diffupose.data import build_cmu

    monkeypatch.setattr(build_cmu, "import_mocap", import_mocap)
    rc, out, err = run(["import-mocap", "walk.bvh", "run.bvh", "-o", tmp_path, "--name", "mine", "--fps", "25",
                        "--no-detections"], capsys)
    assert rc == 0 and "data_3d_mine.npz" in out, err
    inputs, out_dir, name, kw = calls[0]
    assert inputs == ["walk.bvh", "run.bvh"] and out_dir == str(tmp_path) and name == "mine"
    assert kw["fps"] == 25 and kw["detections"] is False and kw["amc_fps"] == 120 and kw["seed"] == 0
    rc, _, err = run(["import-mocap", "walk.bvh", "-o", tmp_path, "--name", "bad"], capsys)
    _assert_one_line_error(rc, err, "walk.bvh:12: expected CHANNELS")


# ---------------------------------------------------------------------------------------------
# eval and demo (on a few frames of the embedded CMU set)
# ---------------------------------------------------------------------------------------------
SMALL = ["--max-frames", "24", "--steps", "2", "--backend", "reference", "-q"]


def test_eval_table_and_json(tmp_path, ckpt, capsys):
    out = tmp_path / "eval.json"
    rc, stdout, err = run(["eval", "--checkpoint", ckpt, *SMALL, "-n", "1", "3", "--json", out], capsys)
    assert rc == 0, err
    assert "on cmu: 24 of 11,624 test frames" in stdout and "2D input 'gt'" in stdout
    for head in ("cmu test. Protocol #1: MPJPE (mm)", "cmu test. Protocol #2: P-MPJPE (mm)"):
        assert head in stdout
    table = stdout.split("Protocol #1")[1].split("Protocol #2")[0]
    assert "DiffuPose N=1" in table and "DiffuPose N=3" in table and "Avg" in table and "walk" in table
    assert "oracle" not in stdout  # only on request
    assert "N=3: lifted 24 frames in" in stdout and f"results -> {out}" in stdout
    doc = json.loads(out.read_text())
    assert {"format", "summary", "per_action", "frames_per_action", "dataset", "settings", "checkpoint"} <= set(doc)
    assert doc["format"] == "diffupose-eval" and "oracle_note" not in doc
    assert set(doc["summary"]) == {"p1_n1", "p2_n1", "p1_n3", "p2_n3"}
    assert doc["per_action"]["N=3"]["mpjpe"]["Avg"] == pytest.approx(doc["summary"]["p1_n3"])
    assert doc["dataset"] == {**doc["dataset"], "name": "cmu", "keypoints": "gt", "frames": 24, "split": "test"}
    assert doc["settings"] == {**doc["settings"], "hypotheses": [1, 3], "steps": 2, "flip": True,
                               "aggregate": "mean", "backend": "reference", "oracle": False}
    assert sum(doc["frames_per_action"].values()) == 24 and len(doc["checkpoint"]["weights_sha256"]) == 64


def test_eval_oracle_only_under_its_name(tmp_path, ckpt, capsys):
    rc, stdout, err = run(["eval", "--checkpoint", ckpt, *SMALL, "-n", "3", "--oracle", "--aggregate", "median",
                           "--no-flip", "--json", tmp_path / "e.json"], capsys)
    assert rc == 0, err
    oracle = [ln for ln in stdout.splitlines() if "oracle" in ln.lower() and not ln.startswith("results ->")]
    assert len(oracle) == 2 and all(ln.startswith("oracle best-of-3 (uses ground truth; not a prediction)")
                                    for ln in oracle)
    assert "median of N, flip off" in stdout
    doc = json.loads((tmp_path / "e.json").read_text())
    assert set(doc["summary"]) == {"p1_n3", "p2_n3", "oracle_p1_n3", "oracle_p2_n3"} and "oracle_note" in doc
    assert "oracle best-of-3 (uses ground truth; not a prediction)" in doc["per_action"]


def test_eval_errors(tmp_path, ckpt, bad_checkpoints, capsys):
    base = ["eval", "--checkpoint", ckpt, *SMALL]
    _assert_one_line_error(*run([*base, "--data-dir", tmp_path / "nope"], capsys)[::2], "data directory not found")
    _assert_one_line_error(*run([*base, "--data-dir", tmp_path], capsys)[::2], "split file not found")
    _assert_one_line_error(*run([*base, "--keypoints", "cpn"], capsys)[::2], "data_2d_cmu_cpn.npz")
    _assert_one_line_error(*run([*base, "--dataset", "h36m"], capsys)[::2], "--dataset h36m needs --data-dir")
    _assert_one_line_error(*run([*base, "--dataset", "h36m", "--data-dir", tmp_path], capsys)[::2],
                           "Human3.6M 3D pose file not found")
    _assert_one_line_error(*run([*base, "--json", tmp_path / "no" / "e.json"], capsys)[::2], "does not exist")
    he, _ = bad_checkpoints["other skeleton"]
    _assert_one_line_error(*run(["eval", "--checkpoint", he, *SMALL], capsys)[::2],
                           "model is for the humaneva15 skeleton but cmu has h36m17 poses")
    assert os.listdir(tmp_path) == []
    # the regressor of the ablations is scored (one prediction per frame), not refused
    reg, _ = bad_checkpoints["regressor"]
    rc, stdout, err = run(["eval", "--checkpoint", reg, *SMALL], capsys)
    assert rc == 0 and "regressor N=1" in stdout and "N=10" not in stdout, err


def test_demo_figure_and_numbers(tmp_path, ckpt, capsys, monkeypatch):
    from PIL import Image

    fig = tmp_path / "demo.png"
    monkeypatch.setattr(cli, "DEMO_CPU_FRAMES", 24)  # the CPU default subsample, made small
    argv = ["demo", "--checkpoint", ckpt, "--out", fig, "-n", "3", "--steps", "2", "--backend", "reference", "-q",
            "--json", tmp_path / "demo.json"]
    rc, stdout, err = run(argv, capsys)
    assert rc == 0, err
    assert "24 of 11,624 test frames" in stdout and "the CPU default, --max-frames 0 for all" in stdout
    lines = stdout.splitlines()
    head = {ln.split()[0] + " " + ln.split()[1]: ln for ln in lines if ln.startswith(("mean pose", "DiffuPose N="))}
    assert {"mean pose", "DiffuPose N=1", "DiffuPose N=3"} <= set(head)
    assert "MPJPE against the mean-pose baseline: N=1" in stdout
    assert "per action. Protocol #1: MPJPE (mm)" in stdout and "oracle" not in stdout
    assert "wall time" in stdout and "frames/s" in stdout and f"figure -> {fig}" in stdout
    with Image.open(fig) as im:
        assert im.format == "PNG" and im.size[0] >= 1000 and im.size[1] >= 900
        px = np.asarray(im.convert("RGB"))
    assert (px < 250).mean() > 0.02 and (np.abs(px[..., 0].astype(int) - px[..., 2]) > 100).any()
    doc = json.loads((tmp_path / "demo.json").read_text())
    assert doc["format"] == "diffupose-demo" and set(doc["summary"]) == {"p1_n1", "p2_n1", "p1_n3", "p2_n3"}
    assert set(doc["per_action"]) == {"mean pose (training set)", "N=1", "N=3"}
    assert doc["figure"] == str(fig.resolve())
    assert sorted(os.listdir(tmp_path)) == ["demo.json", "demo.png"]  # no temporaries left


def test_demo_without_checkpoint_names_the_file_and_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEFAULT_CHECKPOINT", tmp_path / "assets" / "checkpoints" / "cmu_gcn")
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(["demo"], capsys)
    _assert_one_line_error(rc, err, "shipped checkpoint is missing")
    assert str(tmp_path / "assets" / "checkpoints" / "cmu_gcn.safetensors") in err
    assert "python train/h36m.py --dataset cmu" in err and "--checkpoint" in err
    assert os.listdir(tmp_path) == []  # no figure
    _assert_one_line_error(*run(["demo", "--checkpoint", tmp_path / "nope"], capsys)[::2], "checkpoint not found")
    _assert_one_line_error(*run(["demo", "--out", "demo.txt"], capsys)[::2], "unknown format '.txt'")
