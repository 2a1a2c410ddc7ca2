"""Virtual cameras for real mocap: an H36M-like rig of 4 cameras around a subject's capture
area, exact projection, and detector-like 2D noise.

The rig copies the published Human3.6M intrinsics (focal length ~1145 px, 1000 x 1000 px images,
their distortion) and the layout of its extrinsics: four cameras near the corners of the room,
at 1.5-1.6 m height, about 20 degrees either side of one room axis, looking at the middle of the
capture volume. Here that axis is set across the subject's main direction of travel (so walks are
seen from the side and obliquely, as in H36M), and each camera steps back from the H36M distance
(about 5 m) only as far as needed for every joint of every frame of the subject to fall inside
its image with a margin.

Cameras use diffupose.data.cameras (Camera, world_to_camera, projection with distortion).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from diffupose.data.cameras import Camera, load_cameras, quaternion_from_matrix, world_to_camera

# Human3.6M S1's cameras, measured from the room centre: azimuth (deg, from the room's +x axis
# towards +y, minus 90 so that 0 is the room's long axis) and height (m). Distances ~4.1-5.5 m.
H36M_AZIMUTHS_DEG = (-20.4, -160.9, 19.5, 154.3)
H36M_HEIGHTS_M = (1.56, 1.61, 1.49, 1.57)
H36M_DISTANCE_M = 5.0

# Detector-like noise per H36M17 joint, in metres at the subject (converted to pixels with the
# camera's focal length / depth, so it scales with the person's size in the image): small on
# the torso, larger at the extremities, as 2D detectors (CPN, HRNet) err on H36M.
NOISE_SIGMA_M = np.array([
    0.012,                 # pelvis
    0.016, 0.022, 0.030,   # r_hip, r_knee, r_ankle
    0.016, 0.022, 0.030,   # l_hip, l_knee, l_ankle
    0.014, 0.012,          # spine, thorax
    0.015, 0.018,          # nose, head
    0.015, 0.024, 0.034,   # l_shoulder, l_elbow, l_wrist
    0.015, 0.024, 0.034,   # r_shoulder, r_elbow, r_wrist
])
# Chance per joint and frame of a gross error (a detection on the wrong limb or background).
OUTLIER_PROB = np.where(np.isin(np.arange(17), (3, 6, 13, 16)), 0.02,
                        np.where(np.isin(np.arange(17), (2, 5, 12, 15)), 0.01, 0.003))
OUTLIER_RANGE_M = (0.15, 0.45)  # size of a gross error at the subject
SWAP_PROB = 0.004  # chance per frame that the detector swaps one left/right limb pair


@dataclass(frozen=True)
class RigSpec:
    azimuths_deg: tuple[float, ...] = H36M_AZIMUTHS_DEG
    heights_m: tuple[float, ...] = H36M_HEIGHTS_M
    min_distance_m: float = H36M_DISTANCE_M
    max_distance_m: float = 25.0
    distance_step_m: float = 0.1
    margin_px: float = 24.0
    jitter_deg: float = 6.0  # per-subject random turn of each camera around the area (seeded)
    jitter_height_m: float = 0.05


def h36m_intrinsics() -> list[Camera]:
    """The four Human3.6M cameras (intrinsics used; extrinsics replaced by place_rig)."""
    return load_cameras()["S1"]


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Quaternion (w, x, y, z), camera -> world, of a camera at `eye` looking at `target` with
    the image's y axis pointing down (x right, y down, z forward, as in H36M)."""
    fwd = np.asarray(target, float) - np.asarray(eye, float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, up)
    if np.linalg.norm(right) < 1e-6:
        raise ValueError("look_at: the view direction is parallel to up")
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    return quaternion_from_matrix(np.stack([right, down, fwd], axis=1))


def project_world(cam: Camera, X: np.ndarray, distort: bool = True) -> np.ndarray:
    """World points [..., 3] (metres) -> pixels [..., 2] (float64)."""
    return cam.project(world_to_camera(np.asarray(X, np.float64), cam.orientation, cam.translation), distort)


def in_image(cam: Camera, X: np.ndarray, margin_px: float = 0.0) -> np.ndarray:
    """Which world points [..., 3] are in front of the camera and inside its image, both with
    and without distortion (the distortion polynomial can fold far-off points back in)."""
    Xc = world_to_camera(np.asarray(X, np.float64), cam.orientation, cam.translation)
    ok = Xc[..., 2] > 0.3
    Xc = np.where(ok[..., None], Xc, np.array([0.0, 0.0, 1.0]))
    for distort in (False, True):
        px = cam.project(Xc, distort)
        ok &= ((px[..., 0] >= margin_px) & (px[..., 0] <= cam.res_w - margin_px)
               & (px[..., 1] >= margin_px) & (px[..., 1] <= cam.res_h - margin_px))
    return ok


def stable_seed(*parts) -> list[int]:
    """A stable seed from strings and ints (Python's hash() is salted per process)."""
    return [p if isinstance(p, (int, np.integer)) else zlib.crc32(str(p).encode()) for p in parts]


def main_axis_deg(points_xy: np.ndarray) -> float:
    """Direction (deg) of the largest spread of horizontal positions [N, 2] (the travel axis)."""
    d = points_xy - points_xy.mean(0)
    w, v = np.linalg.eigh(d.T @ d / max(len(d), 1))
    return float(np.degrees(np.arctan2(v[1, -1], v[0, -1])))


def place_rig(points: np.ndarray, subject: str, seed: int = 0, spec: RigSpec = RigSpec(),
              intrinsics: Sequence[Camera] | None = None, id_prefix: str = "vcam") -> list[Camera]:
    """Four cameras around the capture area of `points` [N, 3] (all joints of all frames of a
    subject, world metres, Z up) that each see every point with spec.margin_px to spare."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    if not len(points) or not np.isfinite(points).all():
        raise ValueError(f"place_rig({subject}): need finite points, got {points.shape}")
    intrinsics = list(intrinsics or h36m_intrinsics())
    if len(intrinsics) != len(spec.azimuths_deg):
        raise ValueError(f"{len(intrinsics)} intrinsics for {len(spec.azimuths_deg)} azimuths")
    rng = np.random.default_rng(stable_seed(seed, "rig", subject))
    lo, hi = points.min(0), points.max(0)
    target = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2])
    # The room's long axis (azimuth 0) is set across the main direction of travel.
    base = main_axis_deg(points[:, :2]) + 90.0
    pts = points
    cams = []
    for k, (intr, az, h) in enumerate(zip(intrinsics, spec.azimuths_deg, spec.heights_m)):
        a = np.radians(base + az + rng.uniform(-spec.jitter_deg, spec.jitter_deg))
        height = h + rng.uniform(-spec.jitter_height_m, spec.jitter_height_m)
        d = spec.min_distance_m
        while True:
            eye = np.array([target[0] + d * np.cos(a), target[1] + d * np.sin(a), height])
            q = look_at(eye, target)
            cam = Camera(id=f"{id_prefix}{k}", center=intr.center, focal_length=intr.focal_length,
                         radial_distortion=intr.radial_distortion,
                         tangential_distortion=intr.tangential_distortion, res_w=intr.res_w,
                         res_h=intr.res_h, orientation=q, translation=eye)
            if in_image(cam, pts, spec.margin_px).all():
                break
            d += spec.distance_step_m
            if d > spec.max_distance_m:
                raise ValueError(f"place_rig({subject}): camera {k} cannot see the whole capture area "
                                 f"(extent {np.round(hi - lo, 2)} m) from {spec.max_distance_m} m")
        cams.append(cam)
    return cams


def detector_noise(px: np.ndarray, depth: np.ndarray, cam: Camera, rng: np.random.Generator,
                   sigma_m: np.ndarray = NOISE_SIGMA_M, outlier_prob: np.ndarray = OUTLIER_PROB,
                   swap_prob: float = SWAP_PROB) -> np.ndarray:
    """Detector-like 2D keypoints from exact ones.

    px [F, 17, 2] pixels; depth [F] of the subject (m) in this camera, which sets pixels per
    metre. Adds per-joint Gaussian noise (sigma_m, larger at the extremities), occasional gross
    errors (outlier_prob per joint and frame, OUTLIER_RANGE_M in a random direction), and rarely
    a left/right swap of one limb (swap_prob per frame). Clipped to the image."""
    px = np.asarray(px, np.float64)
    F, J, _ = px.shape
    if J != 17:
        raise ValueError(f"detector_noise: expected 17 joints (H36M17), got {J}")
    scale = (float(np.mean(cam.focal_length)) / np.asarray(depth, np.float64))[:, None, None]  # px per m
    out = px + rng.standard_normal((F, J, 2)) * sigma_m[None, :, None] * scale
    hit = rng.random((F, J)) < outlier_prob[None, :]
    n = int(hit.sum())
    if n:
        ang = rng.uniform(0, 2 * np.pi, n)
        mag = rng.uniform(*OUTLIER_RANGE_M, n) * np.broadcast_to(scale[:, :, 0], (F, J))[hit]
        out[hit] += np.stack([np.cos(ang), np.sin(ang)], -1) * mag[:, None]
    swaps = np.nonzero(rng.random(F) < swap_prob)[0]
    limbs = ((1, 2, 3), (4, 5, 6)), ((14, 15, 16), (11, 12, 13))  # (right, left) legs, arms
    for f in swaps:
        right, left = limbs[rng.integers(2)]
        for r, l in zip(right, left):
            out[f, [r, l]] = out[f, [l, r]]
    out[..., 0] = np.clip(out[..., 0], 0, cam.res_w - 1)
    out[..., 1] = np.clip(out[..., 1], 0, cam.res_h - 1)
    return out


def render_2d(X: np.ndarray, cams: Sequence[Camera], rng: np.random.Generator | None = None
              ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """World poses [F, 17, 3] -> (exact pixels per camera, noisy pixels per camera or None),
    each [F, 17, 2] float32. Raises if a point falls behind a camera."""
    gt, det = [], ([] if rng is not None else None)
    for cam in cams:
        Xc = world_to_camera(np.asarray(X, np.float64), cam.orientation, cam.translation)
        px = cam.project(Xc)
        gt.append(px.astype(np.float32))
        if rng is not None:
            det.append(detector_noise(px, Xc[:, 0, 2], cam, rng).astype(np.float32))
    return gt, det

