"""Small look-alike dataset files in exactly the VideoPose3D layouts, written to temporary
directories (Human3.6M and HumanEva are never committed; the CMU files may not exist yet).

World poses are random but deterministic per seed: a root that wanders near the room centre and
joints at fixed random offsets from it plus per-frame jitter, every joint distinct, so a wrong
joint selection, camera or frame shows in the numbers. The 2D keypoints are the projections of the
(reduced) 3D through the cameras, with distortion, plus optional pixel noise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from diffupose.data.cameras import Camera, load_cameras, quaternion_from_matrix, save_cameras
from diffupose.data.videopose3d import H36M32_TO_17, metadata_for, save_positions_2d, save_positions_3d
from diffupose.skeleton import H36M16, H36M17, H36M17_TO_16, HUMANEVA15, Skeleton


@dataclass
class FakeSet:
    """What was written: the world 3D (as in the file), the 2D pixels (as in the file), paths."""
    data_dir: Path
    world: dict  # subject -> action -> [F, J3, 3] metres
    pixels: dict  # subject -> action -> list per camera of [F2, J2, 2]
    cameras: dict  # subject -> list[Camera]
    paths: dict = field(default_factory=dict)


def world_poses(rng: np.random.Generator, frames: int, joints: int, centre=(0.0, 0.0, 0.9)) -> np.ndarray:
    """[frames, joints, 3] world metres, Z up, within about a metre of `centre`."""
    offsets = rng.uniform(-0.5, 0.5, size=(joints, 3)) * np.array([1.0, 1.0, 1.6])
    offsets[0] = 0.0
    root = np.asarray(centre) + np.cumsum(rng.normal(scale=0.01, size=(frames, 3)), axis=0)
    jitter = rng.normal(scale=0.02, size=(frames, joints, 3))
    return (root[:, None, :] + offsets[None] + jitter).astype(np.float32)


def project(world: np.ndarray, cameras: Sequence[Camera]) -> list[np.ndarray]:
    return [cam.project(cam.world_to_camera(world.astype(np.float64))).astype(np.float32) for cam in cameras]


def look_at_camera(cam_id: str, position, target=(0.0, 0.0, 1.0), res=(1000, 1000), focal=1100.0) -> Camera:
    """A camera at `position` (world metres, Z up) looking at `target`, x right, y down, z forward."""
    position, target = np.asarray(position, float), np.asarray(target, float)
    f = (target - position) / np.linalg.norm(target - position)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    R = np.stack([r, d, f], axis=1)  # camera -> world: columns are the camera axes in the world
    return Camera(id=cam_id, center=np.array([res[0] / 2 + 3.0, res[1] / 2 - 2.0]), focal_length=np.array([focal, focal * 1.002]),
                  radial_distortion=np.array([-0.2, 0.24, -0.003]), tangential_distortion=np.array([-0.001, -0.0015]),
                  res_w=res[0], res_h=res[1], orientation=quaternion_from_matrix(R), translation=position)


def ring_cameras(n: int, radius: float = 4.0, height: float = 1.5, res=(1000, 1000), phase: float = 0.3) -> list[Camera]:
    return [look_at_camera(f"cam{i}", (radius * np.cos(phase + 2 * np.pi * i / n), radius * np.sin(phase + 2 * np.pi * i / n),
                                       height), res=res) for i in range(n)]


def _write_set(data_dir: Path, name3d: str, name2d: str, world: dict, cameras: dict, joints_2d: tuple | None,
               skeleton_2d: Skeleton, rng: np.random.Generator, extra_2d_frames: int = 0, noise_px: float = 0.0,
               layout_name: str | None = None) -> dict:
    pixels = {}
    for s, acts in world.items():
        pixels[s] = {}
        for a, w in acts.items():
            w2 = w if joints_2d is None else w[:, list(joints_2d)]
            views = project(w2, cameras[s])
            out = []
            for v in views:
                v = v + rng.normal(scale=noise_px, size=v.shape).astype(np.float32) if noise_px else v
                if extra_2d_frames:
                    v = np.concatenate([v, rng.uniform(0, 1000, size=(extra_2d_frames,) + v.shape[1:]).astype(np.float32)])
                out.append(v)
            pixels[s][a] = out
    save_positions_3d(data_dir / name3d, world)
    save_positions_2d(data_dir / name2d, pixels, metadata_for(skeleton_2d, layout_name))
    return pixels


def fake_h36m(data_dir, subjects=("S1", "S5", "S9", "S11"), actions=("Walking 1", "TakingPhoto", "SittingDown 2"),
              frames: int = 12, keypoints: str = "gt", joints_3d: int = 32, extra_2d_frames: int = 3,
              noise_px: float = 0.0, seed: int = 0) -> FakeSet:
    """data_3d_h36m.npz ([F, joints_3d, 3]) and data_2d_h36m_<keypoints>.npz (4 cameras, 17 joints,
    or 16 for keypoints 'hr') with the published Human3.6M cameras. Frames vary per clip."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cams = load_cameras()
    world = {s: {a: world_poses(rng, frames + i, joints_3d) for i, a in enumerate(actions)} for s in subjects}
    skel2d = H36M16 if keypoints == "hr" else H36M17
    to17 = H36M32_TO_17 if joints_3d == 32 else tuple(range(17))
    j2 = to17 if skel2d is H36M17 else tuple(to17[j] for j in H36M17_TO_16)
    pixels = _write_set(data_dir, "data_3d_h36m.npz", f"data_2d_h36m_{keypoints}.npz", world, cams, j2, skel2d,
                        rng, extra_2d_frames, noise_px, "h36m")
    return FakeSet(data_dir, world, pixels, {s: cams[s] for s in subjects},
                   {"3d": data_dir / "data_3d_h36m.npz", "2d": data_dir / f"data_2d_h36m_{keypoints}.npz"})


def fake_humaneva(data_dir, subjects=("Train/S1", "Train/S2", "Train/S3", "Validate/S1", "Validate/S2", "Validate/S3"),
                  actions=("Walk 1 chunk0", "Jog 1 chunk0", "Box 1 chunk0", "Gestures 1 chunk0"),
                  frames: int = 10, extra_2d_frames: int = 2, seed: int = 1) -> FakeSet:
    """data_3d_humaneva15.npz, data_2d_humaneva15_gt.npz (3 cameras) and cameras_humaneva.json
    (made-up cameras keyed by the bare subject, as the HumanEva parameters are not public)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bare = sorted({s.rsplit("/", 1)[-1] for s in subjects})
    cam_by_bare = {b: ring_cameras(3, radius=3.5 + 0.1 * i, res=(640, 480), phase=0.2 * i) for i, b in enumerate(bare)}
    cam_path = data_dir / "cameras_humaneva.json"
    save_cameras(cam_path, cam_by_bare, "fake HumanEva-I cameras for the tests")
    cams = load_cameras(cam_path)  # as the loader will see them (JSON round trip)
    by_subject = {s: cams[s.rsplit("/", 1)[-1]] for s in subjects}
    world = {s: {a: world_poses(rng, frames + i, 15) for i, a in enumerate(actions)} for s in subjects}
    pixels = _write_set(data_dir, "data_3d_humaneva15.npz", "data_2d_humaneva15_gt.npz", world, by_subject, None,
                        HUMANEVA15, rng, extra_2d_frames, 0.0, "humaneva15")
    return FakeSet(data_dir, world, pixels, by_subject,
                   {"3d": data_dir / "data_3d_humaneva15.npz", "2d": data_dir / "data_2d_humaneva15_gt.npz",
                    "cameras": cam_path})


def fake_cmu(data_dir, train: dict | None = None, test: dict | None = None, action_labels: dict | None = None,
             frames: int = 8, num_cameras: int = 4, joints_3d: int = 17, seed: int = 2) -> FakeSet:
    """The embedded-set layout: data_3d_cmu.npz, data_2d_cmu_gt.npz, data_2d_cmu_det.npz (noisy),
    cameras_cmu.json (keyed by the npz subjects), split.json (with action_labels)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train = train if train is not None else {"07": ["07_01", "07_02"], "86": ["86_01"]}
    test = test if test is not None else {"86": ["86_02"], "09": ["09_01"]}
    action_labels = action_labels if action_labels is not None else {
        "07_01": "walk", "07_02": "walk", "86_01": "run", "86_02": "walk", "09_01": "run"}
    clips: dict = {}
    for part in (train, test):
        for s, acts in part.items():
            clips.setdefault(s, []).extend(a for a in acts if a not in clips.get(s, []))
    cam_path = data_dir / "cameras_cmu.json"
    save_cameras(cam_path, {s: ring_cameras(num_cameras, radius=4.0 + 0.05 * i) for i, s in enumerate(clips)},
                 "fake CMU cameras for the tests")
    cams = load_cameras(cam_path)
    world = {s: {a: world_poses(rng, frames + i, joints_3d) for i, a in enumerate(acts)} for s, acts in clips.items()}
    j2 = H36M32_TO_17 if joints_3d == 32 else None
    pixels = _write_set(data_dir, "data_3d_cmu.npz", "data_2d_cmu_gt.npz", world, cams, j2, H36M17, rng, 0, 0.0, "h36m")
    _write_set(data_dir, "data_3d_cmu.npz", "data_2d_cmu_det.npz", world, cams, j2, H36M17, rng, 0, 4.0, "h36m")
    (data_dir / "split.json").write_text(json.dumps({"train": train, "test": test, "action_labels": action_labels}))
    return FakeSet(data_dir, world, pixels, {s: cams[s] for s in clips},
                   {"3d": data_dir / "data_3d_cmu.npz", "2d": data_dir / "data_2d_cmu_gt.npz",
                    "det": data_dir / "data_2d_cmu_det.npz", "cameras": cam_path, "split": data_dir / "split.json"})


# ---------------------------------------------------------------------------------------------
# what a loader should produce, computed independently of the loader and of cameras.qrot
# ---------------------------------------------------------------------------------------------
def quat_to_matrix(q):
    """Rotation matrix of a unit quaternion (w, x, y, z), written out independently of cameras.qrot."""
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def expected_rows(fake, subject, action, cam_index, keep):
    """(3D, 2D) the loader should produce for one clip and camera, computed from the raw fake."""
    cam = fake.cameras[subject][cam_index]
    world = fake.world[subject][action].astype(np.float64)[:, keep]
    Rm = quat_to_matrix(cam.orientation)  # camera -> world
    x = (world - cam.translation) @ Rm  # = R^T (X - t) per point
    x = x - x[:, :1]
    px = fake.pixels[subject][action][cam_index][: world.shape[0]].astype(np.float64)
    y = px / cam.res_w * 2 - np.array([1.0, cam.res_h / cam.res_w])
    return x, y


def rows_of(ps, subject, clip, camera):
    m = (ps.subject == subject) & (ps.clip == clip) & (ps.camera == camera)
    order = np.argsort(ps.frame[m])
    return ps.pose3d[m][order], ps.pose2d[m][order], ps.frame[m][order]
