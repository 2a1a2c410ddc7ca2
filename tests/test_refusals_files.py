"""The corpus of bad FILES: each one handed to the real subcommand or reader that takes it
(diffupose eval / lift / viz / import-mocap, train's loaders and --resume, the camera, split and
VideoPose3D readers). Every one must end with a non-zero status and one line on stderr naming the
file, no traceback, no "unexpected ... please report it", nothing written, and, for the pickle
payloads, no marker file: the payload never ran.

Positive controls sit beside the refusals (a genuine VideoPose3D file read by the restricted
unpickler, a clean lift output drawn, a clean BVH imported), so that a reader refusing everything
would fail here too.
"""
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib import format as npf

from diffupose import cli
from diffupose.data import safe_pickle
from diffupose.data.cameras import load_cameras
from diffupose.data.safe_pickle import UnsafePickleError, load_npz, restricted_loads
from diffupose.data.user_files import UserFileError, check_finite, require_regular_file
from diffupose.data.videopose3d import load_positions_2d, load_positions_3d
from diffupose.keypoints import KeypointError, read_keypoints
from diffupose.recipes import main as train_main
from diffupose.skeleton import H36M17
from tests.fakes import fake_cmu, fake_h36m, fake_humaneva
from tests.test_cli import _save_tiny
from tests.test_keypoints import bodies, coco_results, project

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(120)]  # a FIFO would hang: fail instead

W, H = 1000, 800
SMALL_TRAIN = ["--d-model", "16", "--blocks", "1", "--epochs", "1", "--batch-size", "64", "--backend", "reference",
               "--no-progress", "--no-eval"]


# ---------------------------------------------------------------------------------------------
# payloads: pickles that would create the marker file if anything ran them
# ---------------------------------------------------------------------------------------------
def _make_marker(path):  # what the "arbitrary class" payload's __reduce__ calls
    Path(path).write_text("pwned")
    return {}


class Evil:
    """An object whose pickle calls _make_marker (any class's __reduce__ can name any callable)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_make_marker, (self.marker,))


def _global_call(module: str, name: str, *args) -> bytes:
    """A protocol-2 pickle of module.name(*args), the module spelt as given (os, posix, ...)."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + pickle.dumps(args, protocol=2)[2:-1] + b"R."


def payload(kind: str, marker: Path) -> bytes:
    m = str(marker)
    return {
        "os.system": lambda: _global_call("os", "system", f"touch {m}"),
        "posix.system": lambda: _global_call("posix", "system", f"touch {m}"),
        "builtins.exec": lambda: _global_call("builtins", "exec", f"open({m!r}, 'w').close()"),
        "subprocess": lambda: _global_call("subprocess", "call", ["touch", m]),
        "reduce": lambda: pickle.dumps(Evil(m), protocol=3),
    }[kind]()


PAYLOADS = ("os.system", "posix.system", "builtins.exec", "subprocess", "reduce")


def object_npy(pickled: bytes) -> bytes:
    """An .npy member announcing a 0-d object array, followed by the given pickle (what np.save
    writes for a dict, with the pickle swapped)."""
    buf = io.BytesIO()
    npf.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    return buf.getvalue() + pickled


def evil_npz(path: Path, key: str, pickled: bytes, **plain) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{key}.npy", object_npy(pickled))
        for k, v in plain.items():
            b = io.BytesIO()
            np.save(b, v, allow_pickle=False)
            z.writestr(f"{k}.npy", b.getvalue())
    return path


def nested_evil_npz(path: Path, key: str, marker: Path) -> Path:
    """A genuine np.savez of the VideoPose3D dict layout with the payload deep inside."""
    np.savez(path, **{key: {"S1": {"Walk": [Evil(marker)]}}})
    return path


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# ---------------------------------------------------------------------------------------------
# running a subcommand and checking the refusal
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "pwned"


def refused(argv, capsys, names, marker=None, outdir=None, runner=cli.main, prefix="diffupose "):
    """Run the command; assert the refusal: non-zero status, one line on stderr that starts like
    every error of that command and names `names` (the file), no traceback, no catch-all, no
    marker, nothing written to outdir. Returns the line."""
    rc = runner([str(a) for a in argv])
    out, err = capsys.readouterr()
    line = err.strip()
    assert rc != 0, f"accepted: {out} {err}"
    assert "\n" not in line, err
    assert line.startswith(prefix), err
    assert "Traceback" not in err and "unexpected" not in err and "please report" not in err, err
    assert str(names) in line, err
    if marker is not None:
        assert not Path(marker).exists(), "the payload ran"
    if outdir is not None:
        assert list(Path(outdir).iterdir()) == [], f"left behind: {list(Path(outdir).iterdir())}"
    return line


def lift_refused(tmp_path, keypoints, ckpt, capsys, marker=None):
    """`diffupose lift KEYPOINTS` refused, writing nothing to its (fresh) output folder."""
    out = tmp_path / "out"
    out.mkdir()
    return refused(["lift", keypoints, "--image-size", W, H, "-o", out / "poses.npz", "--checkpoint", ckpt], capsys,
                   keypoints, marker, out)


def eval_argv(ckpt, data_dir, *more):
    return ["eval", "--checkpoint", ckpt, "--data-dir", data_dir, "--max-frames", "8", "-n", "1", "--steps", "1",
            "--backend", "reference", "-q", *more]


# ---------------------------------------------------------------------------------------------
# 2. payloads never run: every reader and subcommand that reads user files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", PAYLOADS)
def test_eval_keypoints_payload(tmp_path, ckpt, marker, kind, capsys):
    data = fake_cmu(tmp_path / "cmu")
    evil = evil_npz(tmp_path / "evil.npz", "positions_2d", payload(kind, marker))
    line = refused(eval_argv(ckpt, data.data_dir, "--keypoints", evil), capsys, evil, marker)
    assert "refused" in line and "positions_2d" in line


def test_eval_nested_payload_in_a_genuine_layout(tmp_path, ckpt, marker, capsys):
    data = fake_cmu(tmp_path / "cmu")
    evil = nested_evil_npz(tmp_path / "evil.npz", "positions_2d", marker)
    line = refused(eval_argv(ckpt, data.data_dir, "--keypoints", evil), capsys, evil, marker)
    assert "_make_marker" in line


def test_eval_h36m_3d_file_payload(tmp_path, ckpt, marker, capsys):
    fake = fake_h36m(tmp_path / "h36m", subjects=("S1", "S9"))
    evil_npz(fake.paths["3d"], "positions_3d", payload("posix.system", marker))
    refused(eval_argv(ckpt, fake.data_dir, "--dataset", "h36m"), capsys, fake.paths["3d"], marker)


def test_eval_humaneva_metadata_payload(tmp_path, ckpt, marker, capsys):
    """The optional `metadata` key is read through the same restricted unpickler."""
    fake = fake_humaneva(tmp_path / "he")
    good = np.load(fake.paths["2d"], allow_pickle=True)["positions_2d"]  # our own test file
    with zipfile.ZipFile(fake.paths["2d"], "w") as z:
        b = io.BytesIO()
        np.save(b, good, allow_pickle=True)
        z.writestr("positions_2d.npy", b.getvalue())
        z.writestr("metadata.npy", object_npy(payload("builtins.exec", marker)))
    refused(eval_argv(ckpt, fake.data_dir, "--dataset", "humaneva", "--cameras", fake.paths["cameras"]), capsys,
            fake.paths["2d"], marker)


def test_eval_metadata_num_joints_not_a_number(tmp_path, ckpt, capsys):
    data = fake_cmu(tmp_path / "cmu")
    p = data.data_dir / "data_2d_cmu_gt.npz"
    pos = load_npz(p, ["positions_2d"])["positions_2d"]
    np.savez(p, positions_2d=pos, metadata={"layout_name": "h36m", "num_joints": "seventeen"})
    assert "num_joints" in refused(eval_argv(ckpt, data.data_dir), capsys, p)


@pytest.mark.parametrize("which", ["3d", "2d"])
def test_train_loaders_payload(tmp_path, marker, which, capsys):
    fake = fake_h36m(tmp_path / "h36m", subjects=("S1", "S9"))
    key = "positions_3d" if which == "3d" else "positions_2d"
    evil_npz(fake.paths[which], key, payload("subprocess", marker))
    refused(["--data-dir", fake.data_dir, "--out", tmp_path / "run", *SMALL_TRAIN], capsys, fake.paths[which],
            marker, runner=train_main, prefix="error: ")
    assert not (tmp_path / "run").exists()


def test_train_resume_state_payload(tmp_path, marker, capsys):
    fake = fake_h36m(tmp_path / "h36m", subjects=("S1", "S5", "S6", "S7", "S8", "S9", "S11"))
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"epoch": 1, "evil": Evil(marker)}, run / "train_state.pt")  # torch's pickle, payload inside
    refused(["--data-dir", fake.data_dir, "--out", run, "--resume", *SMALL_TRAIN], capsys,
            run / "train_state.pt", marker, runner=train_main, prefix="error: ")


@pytest.mark.parametrize("ext", [".npz", ".npy"])
def test_lift_pickled_keypoints(tmp_path, ckpt, marker, ext, capsys):
    if ext == ".npz":
        evil = evil_npz(tmp_path / "kp.npz", "keypoints", payload("os.system", marker))
    else:
        evil = tmp_path / "kp.npy"
        evil.write_bytes(object_npy(payload("os.system", marker)))
    line = lift_refused(tmp_path, evil, ckpt, capsys, marker)
    assert "pickled objects are refused" in line


def test_viz_pickled_lift_output(tmp_path, marker, capsys):
    evil = evil_npz(tmp_path / "poses.npz", "pose3d", payload("posix.system", marker))
    out = tmp_path / "out"
    out.mkdir()
    refused(["viz", evil, "-o", out / "f.png"], capsys, evil, marker, out)


def test_restricted_unpickler_directly(marker):
    for kind in PAYLOADS:
        with pytest.raises(UnsafePickleError):
            restricted_loads(payload(kind, marker))
    with pytest.raises(UnsafePickleError, match="_codecs.encode"):  # admitted for latin1 only
        restricted_loads(_global_call("_codecs", "encode", "x", "rot13"))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# the restricted reading works on genuine VideoPose3D files (positive controls)
# ---------------------------------------------------------------------------------------------
def test_genuine_videopose3d_files_read_as_numpy_reads_them(tmp_path):
    fake = fake_h36m(tmp_path / "h36m", subjects=("S1",))
    for p, key in ((fake.paths["3d"], "positions_3d"), (fake.paths["2d"], "positions_2d")):
        ours = load_npz(p, [key])[key]
        theirs = np.load(p, allow_pickle=True)[key].item()  # our own trusted test file
        assert ours.keys() == theirs.keys()
        for s in ours:
            for a in ours[s]:
                np.testing.assert_array_equal(np.asarray(ours[s][a]), np.asarray(theirs[s][a]))
    _, meta, J = load_positions_2d(fake.paths["2d"])
    assert J == 17 and meta["num_joints"] == 17 and len(meta["keypoints_symmetry"]) == 2


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_every_numpy_pickle_protocol_and_module_name(tmp_path, protocol):
    """VideoPose3D's files were written by numpy 1.x (numpy.core.multiarray names, protocol 3);
    protocol 2 writes bytes through _codecs.encode; numpy scalars and nested lists occur in metadata."""
    obj = {"S1": {"Walk": [np.arange(12, dtype=np.float32).reshape(2, 3, 2)]}, "n": np.int64(17),
           "f": np.float64(0.5), "sym": [[1, 2], [3, 4]], "t": (1, "a", None, True), "b": b"\x00\xff"}
    data = pickle.dumps(np.array(obj, dtype=object), protocol=protocol)
    # protocols 2 and 3 name globals as text lines (4 and up: length-prefixed strings)
    legacy = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if protocol <= 3 else data
    for raw in (data, legacy):
        back = restricted_loads(raw).item()
        np.testing.assert_array_equal(back["S1"]["Walk"][0], obj["S1"]["Walk"][0])
        assert back["S1"]["Walk"][0].dtype == np.float32
        assert back["n"] == 17 and back["f"] == 0.5 and back["sym"] == obj["sym"] and back["t"] == obj["t"]
        assert back["b"] == obj["b"]
    path = evil_npz(tmp_path / "ok.npz", "positions_3d", legacy)
    assert load_npz(path, ["positions_3d"])["positions_3d"]["n"] == 17


def test_no_allow_pickle_true_left_in_the_package():
    root = Path(safe_pickle.__file__).resolve().parent.parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if "allow_pickle=True" in p.read_text()]
    assert offenders == []


# ---------------------------------------------------------------------------------------------
# 4. files that are not what they claim: one line naming the file
# ---------------------------------------------------------------------------------------------
def test_lift_deeply_nested_json(tmp_path, ckpt, capsys):
    p = tmp_path / "kp.json"
    p.write_text(deep_json())
    line = lift_refused(tmp_path, p, ckpt, capsys)
    assert "nested too deeply" in line


def test_lift_json_with_a_huge_integer(tmp_path, ckpt, capsys):
    p = tmp_path / "kp.json"
    p.write_text('[{"keypoints": [' + "9" * 5000 + "]}]")
    lift_refused(tmp_path, p, ckpt, capsys)


def _csv_text(n=6):
    xy = project(bodies("h36m17", n, seed=3), W, H)
    return "\n".join(",".join(f"{v:.3f}" for v in frame.ravel()) for frame in xy) + "\n"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig", "utf-32"])
def test_csv_in_utf16_is_read(tmp_path, encoding):
    """UTF-16 (what spreadsheets save as "Unicode text"), with or without a byte-order mark, reads
    as the UTF-8 file does."""
    text = ",".join(f"x{j},y{j}" for j in range(17)) + "\n" + _csv_text()
    (tmp_path / "a.csv").write_text(text, encoding="utf-8")
    (tmp_path / "b.csv").write_text(text, encoding=encoding)
    a, b = read_keypoints(tmp_path / "a.csv"), read_keypoints(tmp_path / "b.csv")
    np.testing.assert_array_equal(a.data, b.data)
    assert a.data.shape == (6, 17, 2)


@pytest.mark.parametrize("how", ["latin-1", "binary"])
def test_lift_csv_that_is_not_utf8(tmp_path, ckpt, how, capsys):
    p = tmp_path / "kp.csv"
    if how == "latin-1":
        p.write_bytes(("caméra " + _csv_text()).encode("latin-1"))
    else:
        p.write_bytes(_csv_text().encode() + b"\xff\xfe\x00garbage\n")
    line = lift_refused(tmp_path, p, ckpt, capsys)
    assert f"{p}:" in line and "UTF-8" in line


@pytest.mark.parametrize("ext", [".json", ".csv", ".npy", ".npz"])
def test_lift_fifo_input(tmp_path, ckpt, ext, capsys):
    p = make_fifo(tmp_path / f"kp{ext}")
    line = lift_refused(tmp_path, p, ckpt, capsys)
    assert "FIFO" in line


def test_lift_device_named_json(tmp_path, ckpt, capsys):
    p = tmp_path / "kp.json"
    p.symlink_to("/dev/zero")  # endless bytes: a reader would never finish
    line = lift_refused(tmp_path, p, ckpt, capsys)
    assert "character device" in line


def test_eval_fifo_keypoints_file(tmp_path, ckpt, capsys):
    data = fake_cmu(tmp_path / "cmu")
    p = make_fifo(tmp_path / "kp.npz")
    refused(eval_argv(ckpt, data.data_dir, "--keypoints", p), capsys, p)


def test_eval_fifo_split_file(tmp_path, ckpt, capsys):
    data = fake_cmu(tmp_path / "cmu")
    (data.data_dir / "split.json").unlink()
    make_fifo(data.data_dir / "split.json")
    refused(eval_argv(ckpt, data.data_dir), capsys, data.data_dir / "split.json")


@pytest.mark.parametrize("bad", ["fifo", "deep", "nan focal", "string res", "short center", "zero quaternion"])
def test_eval_bad_camera_file(tmp_path, ckpt, bad, capsys):
    fake = fake_humaneva(tmp_path / "he")
    cams = tmp_path / "cams.json"
    doc = json.loads(fake.paths["cameras"].read_text())
    if bad == "fifo":
        make_fifo(cams)
    elif bad == "deep":
        cams.write_text(deep_json())
    else:
        if bad == "nan focal":
            doc["intrinsics"][1]["focal_length"] = [float("nan"), 1100.0]
        elif bad == "string res":
            doc["intrinsics"][0]["res_w"] = "640px"
        elif bad == "short center":
            doc["intrinsics"][2]["center"] = [320.0]
        else:
            next(iter(doc["extrinsics"].values()))[0]["orientation"] = [0, 0, 0, 0]
        cams.write_text(json.dumps(doc))
    line = refused(eval_argv(ckpt, fake.data_dir, "--dataset", "humaneva", "--cameras", cams), capsys, cams)
    if bad not in ("fifo", "deep"):
        assert "camera" in line


def test_camera_reader_accepts_the_shipped_file():
    cams = load_cameras()
    assert {"S1", "S5", "S9", "S11"} <= set(cams)  # the Human3.6M subjects
    assert all(len(c) == 4 for c in cams.values())


def test_eval_corrupt_and_wrong_kind_of_npz(tmp_path, ckpt, capsys):
    data = fake_cmu(tmp_path / "cmu")
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes((data.data_dir / "data_2d_cmu_gt.npz").read_bytes()[:300])
    refused(eval_argv(ckpt, data.data_dir, "--keypoints", trunc), capsys, trunc)
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros((3, 17, 2)))
    line = refused(eval_argv(ckpt, data.data_dir, "--keypoints", single), capsys, single)
    assert "single .npy" in line


# -- viz --------------------------------------------------------------------------------------
def lift_output(path: Path, F=4, N=3, **override) -> Path:
    rng = np.random.default_rng(0)
    hyp = (rng.normal(scale=0.2, size=(F, N, 17, 3))).astype(np.float32)
    arrays = {"pose3d": hyp.mean(1), "hypotheses": hyp, "spread": np.full((F, 17), 0.05, np.float32),
              "weak": np.zeros((F, 17), bool), "pose2d": rng.uniform(-1, 1, (F, 17, 2)).astype(np.float32),
              "keypoints2d": rng.uniform(0, 900, (F, 17, 2)).astype(np.float32), "frame_index": np.arange(F),
              "joint_names": np.array(H36M17.joints),
              "meta": np.array(json.dumps({"skeleton": "h36m17", "parents": list(H36M17.parents),
                                           "input": {"coordinates": "pixels", "image_size": [W, H]}}))}
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def test_viz_draws_a_clean_output(tmp_path, capsys):
    p = lift_output(tmp_path / "poses.npz")
    assert cli.main(["viz", str(p), "-o", str(tmp_path / "f.png"), "-q"]) == 0, capsys.readouterr().err
    assert (tmp_path / "f.png").stat().st_size > 0


@pytest.mark.parametrize("bad", ["nan hypotheses", "1e30 pose3d", "inf keypoints2d", "nan spread", "text pose3d"])
def test_viz_refuses_broken_values(tmp_path, bad, capsys):
    value, field = bad.split(" ")
    F, N = 4, 3
    shapes = {"hypotheses": (F, N, 17, 3), "pose3d": (F, 17, 3), "keypoints2d": (F, 17, 2), "spread": (F, 17)}
    if value == "text":
        arr = np.full(shapes[field], "x")
    else:
        arr = np.zeros(shapes[field], np.float32)
        arr.reshape(F, -1)[2, 5] = float(value)
    p = lift_output(tmp_path / "poses.npz", **{field: arr})
    out = tmp_path / "out"
    out.mkdir()
    line = refused(["viz", p, "-o", out / "f.png", "--frame", "2"], capsys, p, outdir=out)
    assert field in line
    if value != "text":
        assert "row 2" in line
    out_gif = refused(["viz", p, "-o", out / "c.gif", "-q"], capsys, p, outdir=out)
    assert field in out_gif


def test_viz_frame_index_not_whole_numbers(tmp_path, capsys):
    p = lift_output(tmp_path / "poses.npz", frame_index=np.array([0.0, np.nan, 2.0, 3.0]))
    out = tmp_path / "out"
    out.mkdir()
    assert "frame_index" in refused(["viz", p, "-o", out / "f.png"], capsys, p, outdir=out)


def test_viz_bad_lift_files(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    deep = tmp_path / "poses.json"
    deep.write_text(deep_json())
    assert "nested too deeply" in refused(["viz", deep, "-o", out / "f.png"], capsys, deep, outdir=out)
    fifo = make_fifo(tmp_path / "fifo.npz")
    refused(["viz", fifo, "-o", out / "f.png"], capsys, fifo, outdir=out)
    meta = lift_output(tmp_path / "meta.npz", meta=np.array(deep_json()))
    refused(["viz", meta, "-o", out / "f.png"], capsys, meta, outdir=out)


# -- import-mocap -----------------------------------------------------------------------------
# A minimal BVH with the CMU joint names the importer maps (centimetres, Y up, 12 frames at 20 Hz).
_BVH_TREE = [  # (name, parent, offset)
    ("Hips", None, (0, 0, 0)),
    ("RightHip", "Hips", (-10, -5, 0)), ("RightKnee", "RightHip", (0, -42, 0)), ("RightAnkle", "RightKnee", (0, -40, 0)),
    ("LeftHip", "Hips", (10, -5, 0)), ("LeftKnee", "LeftHip", (0, -42, 0)), ("LeftAnkle", "LeftKnee", (0, -40, 0)),
    ("Chest", "Hips", (0, 12, 0)), ("Chest2", "Chest", (0, 14, 0)), ("Neck", "Chest2", (0, 20, 0)),
    ("Head", "Neck", (0, 10, 0)),
    ("LeftShoulder", "Chest2", (16, 16, 0)), ("LeftElbow", "LeftShoulder", (26, 0, 0)),
    ("LeftWrist", "LeftElbow", (24, 0, 0)),
    ("RightShoulder", "Chest2", (-16, 16, 0)), ("RightElbow", "RightShoulder", (-26, 0, 0)),
    ("RightWrist", "RightElbow", (-24, 0, 0)),
]
_END_SITES = {"Head": (0, 16, 0), "RightAnkle": (0, -6, 12), "LeftAnkle": (0, -6, 12), "LeftWrist": (8, 0, 0),
              "RightWrist": (-8, 0, 0)}
BVH_FRAMES = 12


def cmu_like_bvh(path: Path, edit=None) -> Path:
    lines = ["HIERARCHY"]

    def emit(name, depth):
        parent_offset = next(o for n, _, o in _BVH_TREE if n == name)
        pad = "  " * depth
        lines.append(f"{pad}{'ROOT' if depth == 0 else 'JOINT'} {name}")
        lines.append(pad + "{")
        lines.append(f"{pad}  OFFSET {' '.join(str(v) for v in parent_offset)}")
        chans = "6 Xposition Yposition Zposition Zrotation Yrotation Xrotation" if depth == 0 else \
            "3 Zrotation Yrotation Xrotation"
        lines.append(f"{pad}  CHANNELS {chans}")
        for child, parent, _ in _BVH_TREE:
            if parent == name:
                emit(child, depth + 1)
        if name in _END_SITES:
            lines.extend([f"{pad}  End Site", pad + "  {",
                          f"{pad}    OFFSET {' '.join(map(str, _END_SITES[name]))}", pad + "  }"])
        lines.append(pad + "}")

    emit("Hips", 0)
    n_chan = 6 + 3 * (len(_BVH_TREE) - 1)
    lines.extend(["MOTION", f"Frames: {BVH_FRAMES}", "Frame Time: 0.05"])
    for f in range(BVH_FRAMES):
        row = [0.0] * n_chan
        row[0], row[1], row[2] = 2.0 * f, 98.0, 0.5 * f
        for c in range(6, n_chan, 3):
            row[c + 2] = 5.0 * np.sin(0.3 * f + c)  # small swings about X
        lines.append(" ".join(f"{v:.4f}" for v in row))
    if edit is not None:
        edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def _motion_line(lines, frame):
    return lines.index(f"Frames: {BVH_FRAMES}") + 2 + frame  # 0-based index of that frame's row


def import_argv(inputs, out):
    return ["import-mocap", *inputs, "-o", out, "--name", "mine", "--bvh-scale", "0.01", "--subject", "S1"]


def test_import_mocap_clean_bvh_control(tmp_path, capsys):
    bvh = cmu_like_bvh(tmp_path / "walk.bvh")
    out = tmp_path / "data"
    assert cli.main([str(a) for a in import_argv([bvh], out)]) == 0, capsys.readouterr().err
    pos, J = load_positions_3d(out / "data_3d_mine.npz")
    assert J == 17 and pos["S1"]["walk"].shape == (BVH_FRAMES, 17, 3)


@pytest.mark.parametrize("value", ["1e300", "nan", "inf", "-1e300"])
def test_import_mocap_bvh_channel_out_of_range(tmp_path, value, capsys):
    def edit(lines):
        i = _motion_line(lines, 3)
        row = lines[i].split()
        row[10] = value
        lines[i] = " ".join(row)
        edit.line = i + 1

    bvh = cmu_like_bvh(tmp_path / "walk.bvh", edit)
    out = tmp_path / "data"
    line = refused(import_argv([bvh], out), capsys, f"{bvh}:{edit.line}:")
    assert "frame 3" in line and "channel" in line
    assert not out.exists()  # no empty folder left behind


def test_import_mocap_bvh_offset_nan(tmp_path, capsys):
    def edit(lines):
        i = next(k for k, s in enumerate(lines) if s.strip().startswith("OFFSET") and k > 3)
        lines[i] = lines[i].split("OFFSET")[0] + "OFFSET nan 0 0"
        edit.line = i + 1

    bvh = cmu_like_bvh(tmp_path / "walk.bvh", edit)
    out = tmp_path / "data"
    refused(import_argv([bvh], out), capsys, f"{bvh}:{edit.line}:")
    assert not out.exists()


@pytest.mark.parametrize("value", ["nan", "1e300"])
def test_amc_value_out_of_range(tmp_path, value):
    """The AMC reader (import-mocap's, for CMU skeletons) names the file and line of the value."""
    from diffupose.data import mocap as M
    from tests.test_mocap import SYNTH_AMC, SYNTH_ASF

    (tmp_path / "s.asf").write_text(SYNTH_ASF)
    amc = tmp_path / "s_01.amc"
    amc.write_text(SYNTH_AMC.replace("a 90 90\nb 0", f"a 90 {value}\nb 0"))
    with pytest.raises(M.MocapFormatError) as e:
        M.parse_amc(amc, M.parse_asf(tmp_path / "s.asf"))
    assert str(e.value).startswith(f"{amc}:9: bone 'a' in frame 2") and "\n" not in str(e.value)


def test_import_mocap_hints_name_cli_flags(tmp_path, capsys):
    from tests.test_mocap import SYNTH_BVH

    (tmp_path / "m").mkdir()
    amc = tmp_path / "m" / "01_01.amc"
    amc.write_text("1\nroot 0 0 0 0 0 0\n")
    out = tmp_path / "data"
    line = refused(import_argv([amc], out), capsys, amc)
    assert "--asf" in line and "asf=" not in line
    assert not out.exists()
    bvh = tmp_path / "other.bvh"
    bvh.write_text(SYNTH_BVH)
    line = refused(import_argv([bvh], out), capsys, bvh)
    assert "lacks joint" in line and "mapping=" not in line
    assert not out.exists()


def test_import_mocap_fifo_and_existing_output_kept(tmp_path, capsys):
    fifo = make_fifo(tmp_path / "walk.bvh")
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "FIFO" in refused(import_argv([fifo], out), capsys, fifo)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # a folder that was there stays, untouched


# ---------------------------------------------------------------------------------------------
# the shared checks themselves
# ---------------------------------------------------------------------------------------------
def test_shared_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="thing not found"):
        require_regular_file(tmp_path / "none", "thing")
    with pytest.raises(UserFileError, match="is a directory"):
        require_regular_file(tmp_path, "thing")
    (tmp_path / "ok").write_text("x")
    assert require_regular_file(tmp_path / "ok") == tmp_path / "ok"
    check_finite(np.array([1.0, -2.0]), "w", 10)
    for bad in ([1.0, np.nan], [np.inf], [11.0]):
        with pytest.raises(UserFileError, match="w: "):
            check_finite(np.array(bad), "w", 10)
    with pytest.raises(KeypointError):
        check_finite(np.array(["a"]), "w", 10, error=KeypointError)


def test_fifo_refused_even_by_a_subprocess_of_the_real_command(tmp_path):
    """The installed entry point (python -m diffupose), not just main(): a FIFO must not block it."""
    fifo = make_fifo(tmp_path / "kp.json")
    r = subprocess.run([sys.executable, "-m", "diffupose", "lift", str(fifo), "--image-size", "10", "10",
                        "-o", str(tmp_path / "o.npz")], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "FIFO" in r.stderr, r.stderr
