"""Cameras: the published Human3.6M parameters (and any set in the same JSON form), rotations
between world and camera frames, projection to pixels with distortion, screen normalisation.

Conventions as in VideoPose3D: orientation is a unit quaternion (w, x, y, z) rotating camera to
world, translation is the camera centre in world coordinates (metres here; the JSON holds mm),
world_to_camera(X) = R^-1 (X - t). Screen normalisation maps x in [0, w] to [-1, 1] and y
keeping the aspect ratio: X / w * 2 - [1, h / w].
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from .user_files import check_finite, read_json_file

PathLike = Union[str, Path]
H36M_CAMERAS_JSON = Path(__file__).resolve().parent.parent / "assets" / "h36m_cameras.json"


@dataclass(frozen=True)
class Camera:
    id: str
    center: np.ndarray  # [2] pixels
    focal_length: np.ndarray  # [2] pixels
    radial_distortion: np.ndarray  # [3] k1, k2, k3
    tangential_distortion: np.ndarray  # [2] p1, p2
    res_w: int
    res_h: int
    orientation: np.ndarray  # [4] quaternion (w, x, y, z), camera -> world
    translation: np.ndarray  # [3] camera centre in world metres

    def world_to_camera(self, X: np.ndarray) -> np.ndarray:
        return world_to_camera(X, self.orientation, self.translation)

    def camera_to_world(self, X: np.ndarray) -> np.ndarray:
        return camera_to_world(X, self.orientation, self.translation)

    def project(self, X_cam: np.ndarray, distort: bool = True) -> np.ndarray:
        """Camera-frame points [..., 3] (metres, z > 0) -> pixels [..., 2]."""
        return project_to_pixels(X_cam, self, distort)

    def normalize(self, px: np.ndarray) -> np.ndarray:
        return normalize_screen_coordinates(px, self.res_w, self.res_h)


# ---------------------------------------------------------------------------------------------
# quaternions
# ---------------------------------------------------------------------------------------------
def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors v [..., 3] by unit quaternions q [..., 4] (w, x, y, z)."""
    q = np.broadcast_to(q, v.shape[:-1] + (4,))
    qvec = q[..., 1:]
    uv = np.cross(qvec, v)
    uuv = np.cross(qvec, uv)
    return v + 2 * (q[..., :1] * uv + uuv)


def qinverse(q: np.ndarray) -> np.ndarray:
    out = np.array(q, dtype=np.float64, copy=True)
    out[..., 1:] *= -1
    return out


def world_to_camera(X: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    return qrot(qinverse(R), X - t).astype(X.dtype, copy=False)


def camera_to_world(X: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    return (qrot(np.asarray(R, dtype=np.float64), X) + t).astype(X.dtype, copy=False)


def quaternion_from_matrix(Rm: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a 3x3 rotation matrix."""
    Rm = np.asarray(Rm, dtype=np.float64)
    tr = np.trace(Rm)
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (Rm[2, 1] - Rm[1, 2]) / s, (Rm[0, 2] - Rm[2, 0]) / s, (Rm[1, 0] - Rm[0, 1]) / s]
    elif Rm[0, 0] > Rm[1, 1] and Rm[0, 0] > Rm[2, 2]:
        s = np.sqrt(1.0 + Rm[0, 0] - Rm[1, 1] - Rm[2, 2]) * 2
        q = [(Rm[2, 1] - Rm[1, 2]) / s, 0.25 * s, (Rm[0, 1] + Rm[1, 0]) / s, (Rm[0, 2] + Rm[2, 0]) / s]
    elif Rm[1, 1] > Rm[2, 2]:
        s = np.sqrt(1.0 + Rm[1, 1] - Rm[0, 0] - Rm[2, 2]) * 2
        q = [(Rm[0, 2] - Rm[2, 0]) / s, (Rm[0, 1] + Rm[1, 0]) / s, 0.25 * s, (Rm[1, 2] + Rm[2, 1]) / s]
    else:
        s = np.sqrt(1.0 + Rm[2, 2] - Rm[0, 0] - Rm[1, 1]) * 2
        q = [(Rm[1, 0] - Rm[0, 1]) / s, (Rm[0, 2] + Rm[2, 0]) / s, (Rm[1, 2] + Rm[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    return q / np.linalg.norm(q)


# ---------------------------------------------------------------------------------------------
# projection and normalisation
# ---------------------------------------------------------------------------------------------
def project_to_pixels(X: np.ndarray, cam: Camera, distort: bool = True) -> np.ndarray:
    """Pinhole projection with Human3.6M's radial (k1..k3) and tangential (p1, p2) distortion."""
    if np.any(X[..., 2] <= 0):
        raise ValueError("project_to_pixels: points behind the camera (z <= 0)")
    xy = X[..., :2] / X[..., 2:3]
    if distort:
        k, p = cam.radial_distortion, cam.tangential_distortion
        r2 = np.sum(xy ** 2, axis=-1, keepdims=True)
        radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
        tan = np.sum(p * xy, axis=-1, keepdims=True)
        xy = xy * (radial + tan) + p[::-1] * r2
    return (cam.focal_length * xy + cam.center).astype(X.dtype, copy=False)


def normalize_screen_coordinates(X: np.ndarray, w: int, h: int) -> np.ndarray:
    if X.shape[-1] != 2:
        raise ValueError(f"normalize_screen_coordinates: expected [..., 2], got {X.shape}")
    return (X / w * 2 - np.array([1, h / w])).astype(np.float32)


def image_coordinates(X: np.ndarray, w: int, h: int) -> np.ndarray:
    """Inverse of normalize_screen_coordinates."""
    return ((X + np.array([1, h / w])) * w / 2).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------
# Plausibility bounds of a camera file's numbers (beyond them a value is a corrupt file or a unit
# mistake): pixels for centres, focal lengths and resolutions; millimetres for positions.
MAX_CAMERA_PIXELS = 1e6
MAX_CAMERA_MM = 1e7


def _vector(value, n: int, where: str, limit: float) -> np.ndarray:
    try:
        a = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected {n} numbers, got {str(value)[:60]}") from None
    if a.shape != (n,):
        raise ValueError(f"{where}: expected {n} numbers, got shape {a.shape}")
    check_finite(a, where, limit, error=ValueError)
    return a


def _resolution(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) \
            or not 0 < value <= MAX_CAMERA_PIXELS:
        raise ValueError(f"{where}: expected a positive whole number of pixels, got {value!r}")
    return int(value)


def load_cameras(path: PathLike = H36M_CAMERAS_JSON) -> dict[str, list[Camera]]:
    """subject -> its cameras, in file order, from a JSON in the h36m_cameras.json form
    (intrinsics: list per camera; extrinsics: subject -> list of {orientation, translation_mm}).
    Every number is checked (count, finite, plausible; a unit quaternion's norm is not 0): a bad
    field is a ValueError naming the file, camera and field."""
    path = Path(path)
    doc = read_json_file(path, "camera file", error=ValueError)
    form = "expected the h36m_cameras.json form (intrinsics list, extrinsics per subject)"
    if not isinstance(doc, dict) or not isinstance(doc.get("intrinsics"), list) \
            or not isinstance(doc.get("extrinsics"), dict):
        raise ValueError(f"camera file {path}: missing or malformed field (intrinsics, extrinsics); {form}")
    try:
        intr = doc["intrinsics"]
        out: dict[str, list[Camera]] = {}
        for subject, extr in doc["extrinsics"].items():
            if not isinstance(extr, list) or len(extr) != len(intr):
                raise ValueError(f"camera file {path}: subject {subject} has "
                                 f"{len(extr) if isinstance(extr, list) else 'no list of'} extrinsics for "
                                 f"{len(intr)} cameras")
            cams = []
            for c, (i, e) in enumerate(zip(intr, extr)):
                w = f"camera file {path}: camera {c}"
                q = _vector(e["orientation"], 4, f"{w} of {subject}: orientation", 1e3)
                if not np.linalg.norm(q) > 1e-6:
                    raise ValueError(f"{w} of {subject}: orientation is a zero quaternion")
                cams.append(Camera(
                    id=str(i["id"]), center=_vector(i["center"], 2, f"{w}: center", MAX_CAMERA_PIXELS),
                    focal_length=_vector(i["focal_length"], 2, f"{w}: focal_length", MAX_CAMERA_PIXELS),
                    radial_distortion=_vector(i["radial_distortion"], 3, f"{w}: radial_distortion", 1e3),
                    tangential_distortion=_vector(i["tangential_distortion"], 2, f"{w}: tangential_distortion", 1e3),
                    res_w=_resolution(i["res_w"], f"{w}: res_w"), res_h=_resolution(i["res_h"], f"{w}: res_h"),
                    orientation=q,
                    translation=_vector(e["translation_mm"], 3, f"{w} of {subject}: translation_mm",
                                        MAX_CAMERA_MM) / 1000.0))
                if not (cams[-1].focal_length > 0).all():
                    raise ValueError(f"{w}: focal_length must be positive, got {cams[-1].focal_length.tolist()}")
            out[subject] = cams
    except (KeyError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"camera file {path}: missing or malformed field ({e!r}); {form}") from None
    return out


def save_cameras(path: PathLike, cameras: dict[str, list[Camera]], description: str = "") -> None:
    """Write cameras in the same JSON form (intrinsics from the first subject's cameras)."""
    first = next(iter(cameras.values()))
    doc = {
        "description": description,
        "intrinsics": [{"id": c.id, "center": c.center.tolist(), "focal_length": c.focal_length.tolist(),
                        "radial_distortion": c.radial_distortion.tolist(),
                        "tangential_distortion": c.tangential_distortion.tolist(), "res_w": c.res_w,
                        "res_h": c.res_h} for c in first],
        "extrinsics": {s: [{"orientation": c.orientation.tolist(), "translation_mm": (c.translation * 1000).tolist()}
                           for c in cams] for s, cams in cameras.items()},
    }
    Path(path).write_text(json.dumps(doc, indent=1))
