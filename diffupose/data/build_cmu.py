"""Build the embedded CMU set (diffupose/assets/cmu/) from the CMU mocap files, and the generic
mocap importer behind it.

    python -m diffupose.data.build_cmu [--source DIR] [--out DIR] [--fps 20] [--seed 0]

`import_mocap(inputs, out_dir, name)` turns ASF/AMC or BVH files into the VideoPose3D layout:
data_3d_<name>.npz (positions_3d: subject -> action -> float32 [F, 17, 3], world metres, Z up),
data_2d_<name>_gt.npz and data_2d_<name>_det.npz (positions_2d: subject -> action -> 4 x float32
[F, 17, 2] pixels, exact and detector-like; metadata), and cameras_<name>.json (the
h36m_cameras.json form, extrinsics per subject).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from diffupose.data.cameras import save_cameras
from diffupose.data.mocap import (AsfSkeleton, MocapClip, find_asf, iter_motion_files, load_asf_amc, load_bvh,
                                  parse_asf)
from diffupose.data.virtual_cameras import RigSpec, place_rig, render_2d, stable_seed
from diffupose.skeleton import H36M17

DEFAULT_SOURCE = Path("/work/shared/data/cmu-mocap")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "assets" / "cmu"

METADATA = {"layout_name": "h36m", "num_joints": 17,
            "keypoints_symmetry": [list(H36M17.joints_left), list(H36M17.joints_right)]}

# Short activity labels for the per-action table, from the CMU database's clip descriptions
# (quoted in diffupose/assets/cmu/README.md; the files' headers name only the session).
CMU_ACTION_LABELS = {
    "01_01": "jump", "01_02": "climb", "01_03": "swing", "01_04": "climb", "01_05": "climb",
    "01_06": "sit", "01_07": "sit", "01_08": "sit", "01_09": "hang", "01_10": "swing",
    "01_11": "hang", "01_12": "hang", "01_13": "climb", "01_14": "climb",
    "02_01": "walk", "02_02": "walk", "02_03": "run", "02_04": "jump", "02_05": "punch",
    "02_06": "bend", "02_07": "swordplay", "02_08": "swordplay", "02_09": "swordplay",
    "02_10": "wash",
    "03_01": "walk_terrain", "03_02": "walk_terrain", "03_03": "walk_terrain", "03_04": "walk_terrain",
    "131_01": "walk", "131_02": "walk", "131_03": "hop",
}
# Test split: all of subject 03 (an unseen person) plus, from every other subject, takes whose
# activity has a sibling take of the same subject in train (unseen takes of seen activities).
CMU_TEST_SUBJECTS = ("S03",)
CMU_TEST_CLIPS = {"S01": ("01_04",), "S02": ("02_02", "02_08"), "S131": ("131_02",)}

# Stored precision (grid steps; the rounding error is at most half a step). Rounding to a
# power-of-two grid zeroes low mantissa bits, which lets zlib shrink the files enough for the
# 10 MB budget at 20 Hz. Each is far below what it could matter against: mocap accuracy (~1 mm),
# the exactness of the 2D ground truth (1/128 px), detector noise (sigma 2.5-8 px).
QUANT_3D_M = 2.0 ** -11  # ~0.49 mm
QUANT_2D_GT_PX = 2.0 ** -6  # ~0.016 px
QUANT_2D_DET_PX = 2.0 ** -2  # 0.25 px

_CMU_NAME = re.compile(r"^(\d+)_(\d+)$")


def clip_ids(path: Path, subject: str | None = None) -> tuple[str, str]:
    """(subject, action) for a motion file: CMU names 'NN_MM' give ('SNN', 'NN_MM'); other
    names use `subject` (or the parent folder's name) and the file stem."""
    m = _CMU_NAME.match(path.stem)
    if subject is None:
        subject = f"S{m.group(1)}" if m else path.parent.name
    return subject, path.stem


def _quantize(x: np.ndarray, q: float | None) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x if q is None else np.round(x / q) * q).astype(np.float32)


def import_mocap(inputs: Iterable[str | Path], out_dir: str | Path, name: str, *, fps: float = 20.0,
                 amc_fps: float = 120.0, subject: str | None = None, asf: str | Path | None = None,
                 bvh_scale: float | None = None, seed: int = 0, detections: bool = True,
                 spec: RigSpec = RigSpec(), quant_3d: float | None = QUANT_3D_M,
                 quant_2d_gt: float | None = QUANT_2D_GT_PX, quant_2d_det: float | None = QUANT_2D_DET_PX,
                 log=print) -> dict:
    """ASF/AMC or BVH files (or folders of them) -> VideoPose3D-layout files in out_dir.

    Frames are kept every round(source_fps / fps); each subject gets its own 4-camera rig
    (virtual_cameras.place_rig) around all its clips. The 2D ground truth is the projection of
    the stored (rounded) 3D through the stored cameras; quant_* round what is stored (None: no
    rounding). Returns a summary: paths, per-clip frame
    counts, the rate actually kept. Raises MocapFormatError (file:line) on malformed input."""
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(f"import_mocap: name must be letters, digits, '_' or '-', got {name!r}")
    if not fps > 0:
        raise ValueError(f"import_mocap: fps must be positive, got {fps}")
    files = iter_motion_files(inputs)
    if not files:
        raise ValueError(f"import_mocap: no .amc or .bvh files in {list(map(str, inputs))}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"import_mocap: output {out_dir} exists and is not a folder")

    skeletons: dict[Path, AsfSkeleton] = {}
    clips: dict[str, dict[str, MocapClip]] = {}
    rates = set()
    for f in files:
        subj, action = clip_ids(f, subject)
        if f.suffix.lower() == ".amc":
            a = find_asf(f, asf).resolve()
            if a not in skeletons:
                skeletons[a] = parse_asf(a)
            step = max(1, round(amc_fps / fps))
            clip = load_asf_amc(skeletons[a], f, step=step, fps=amc_fps, name=action)
        else:
            clip = load_bvh(f, scale=bvh_scale, name=action, target_fps=fps)  # the file gives its rate
        if not np.isfinite(clip.h36m17).all():  # the parsers refuse bad numbers; this guards the kinematics
            raise ValueError(f"{f}: forward kinematics gives NaN or infinite joint positions")
        if action in clips.get(subj, {}):
            raise ValueError(f"import_mocap: two files give subject {subj} action {action}: {f}")
        clips.setdefault(subj, {})[action] = clip
        rates.add(round(clip.fps, 3))
        log(f"  {subj} {action}: {clip.num_frames} frames at {clip.fps:.3g} Hz from {f}")

    positions_3d, gt2d, det2d, cameras = {}, {}, {}, {}
    for subj in sorted(clips, key=_subject_key):
        acts = clips[subj]
        pts = np.concatenate([c.h36m17.reshape(-1, 3) for c in acts.values()])
        cams = place_rig(pts, subj, seed=seed, spec=spec)
        cameras[subj] = cams
        positions_3d[subj], gt2d[subj], det2d[subj] = {}, {}, {}
        for action in sorted(acts):
            X = _quantize(acts[action].h36m17, quant_3d)
            rng = np.random.default_rng(stable_seed(seed, "det", subj, action)) if detections else None
            gt, det = render_2d(X, cams, rng)
            positions_3d[subj][action] = X
            gt2d[subj][action] = [_quantize(g, quant_2d_gt) for g in gt]
            if detections:
                det2d[subj][action] = [_quantize(d, quant_2d_det) for d in det]
        log(f"  {subj}: cameras at {', '.join(f'{np.linalg.norm(c.translation[:2] - pts[:, :2].mean(0)):.1f}' for c in cams)} m")

    paths = {"3d": out_dir / f"data_3d_{name}.npz", "2d_gt": out_dir / f"data_2d_{name}_gt.npz",
             "cameras": out_dir / f"cameras_{name}.json"}
    if detections:
        paths["2d_det"] = out_dir / f"data_2d_{name}_det.npz"
    # Everything is parsed and computed before the output folder is touched; a failure while
    # writing removes what this call wrote, and the folders it made: no half dataset, no empty folder.
    made = [d for d in [out_dir, *out_dir.parents] if not d.exists()]
    written: list[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written.append(paths["3d"])
        np.savez_compressed(paths["3d"], positions_3d=positions_3d)
        written.append(paths["2d_gt"])
        np.savez_compressed(paths["2d_gt"], positions_2d=gt2d, metadata=METADATA)
        if detections:
            written.append(paths["2d_det"])
            np.savez_compressed(paths["2d_det"], positions_2d=det2d, metadata=METADATA)
        written.append(paths["cameras"])
        save_cameras(paths["cameras"], cameras, description=(
            f"Virtual H36M-like cameras for the '{name}' mocap import: intrinsics of the four Human3.6M "
            "cameras; extrinsics per subject placed around its capture area by "
            "diffupose.data.virtual_cameras.place_rig. orientation: quaternion (w, x, y, z) camera to "
            "world; translation_mm: camera centre in world millimetres (world: Z up)."))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        for d in made:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return {"paths": {k: str(v) for k, v in paths.items()},
            "frames": {s: {a: c.num_frames for a, c in acts.items()} for s, acts in clips.items()},
            "fps": sorted(rates)}


def _subject_key(s: str):
    m = re.match(r"^S(\d+)$", s)
    return (0, int(m.group(1)), s) if m else (1, 0, s)


def cmu_split(frames: Mapping[str, Mapping[str, int]]) -> dict:
    train, test = {}, {}
    for subj in sorted(frames, key=_subject_key):
        for action in sorted(frames[subj]):
            is_test = subj in CMU_TEST_SUBJECTS or action in CMU_TEST_CLIPS.get(subj, ())
            (test if is_test else train).setdefault(subj, []).append(action)
    unknown = [a for acts in frames.values() for a in acts if a not in CMU_ACTION_LABELS]
    if unknown:
        raise ValueError(f"no action label for clip(s) {', '.join(unknown)}; add them to CMU_ACTION_LABELS")
    labels = {a: CMU_ACTION_LABELS[a] for acts in frames.values() for a in sorted(acts)}
    return {"train": train, "test": test, "action_labels": labels}


def build_cmu(source: str | Path = DEFAULT_SOURCE, out_dir: str | Path = DEFAULT_OUT, fps: float = 20.0,
              seed: int = 0, log=print) -> dict:
    source = Path(source)
    inputs = [p for p in (source / "asfamc", source / "bvh") if p.is_dir()]
    if not inputs:
        raise FileNotFoundError(f"{source}: expected asfamc/ and/or bvh/ folders of CMU mocap files")
    summary = import_mocap(inputs, out_dir, "cmu", fps=fps, seed=seed, log=log)
    return write_split(out_dir, cmu_split(summary["frames"]), summary)


def write_split(out_dir: str | Path, split: dict, summary: dict) -> dict:
    """split.json beside an import_mocap summary's files; the summary gains its path and the
    frames in each part."""
    path = Path(out_dir) / "split.json"
    path.write_text(json.dumps(split, indent=1) + "\n")
    summary["paths"]["split"] = str(path)
    summary["split_frames"] = {part: sum(summary["frames"][s][a] for s, acts in split[part].items() for a in acts)
                               for part in ("train", "test")}
    return summary


def build_main(argv: Sequence[str] | None, prog: str, doc: str, build, default_source: Path,
               default_out: Path) -> int:
    """The command line of a dataset builder `build(source, out_dir, fps=, seed=, log=)`."""
    ap = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.split("\n\n")[0])
    ap.add_argument("--source", default=str(default_source), help="the mocap files (default %(default)s)")
    ap.add_argument("--out", default=str(default_out), help="output folder (default %(default)s)")
    ap.add_argument("--fps", type=float, default=20.0, help="frame rate kept (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the camera jitter and 2D noise")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        summary = build(args.source, args.out, fps=args.fps, seed=args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"{prog.rsplit('.', 1)[-1]}: error: {e}", file=sys.stderr)
        return 1
    size = sum(Path(p).stat().st_size for p in summary["paths"].values())
    print(f"wrote {', '.join(Path(p).name for p in summary['paths'].values())} to {args.out}")
    print(f"frames at {summary['fps']} Hz: train {summary['split_frames']['train']}, "
          f"test {summary['split_frames']['test']}; {size / 1e6:.2f} MB; {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return build_main(argv, "diffupose.data.build_cmu", __doc__, build_cmu, DEFAULT_SOURCE, DEFAULT_OUT)


if __name__ == "__main__":
    sys.exit(main())
