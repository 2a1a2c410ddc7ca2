"""Reading back what `diffupose lift` wrote (.npz or .json): `read_lift_output` -> `LiftOutput`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..data.user_files import parse_json, require_regular_file
from .errors import KeypointError, PathLike, one_line


@dataclass
class LiftOutput:
    pose3d: np.ndarray  # [F, J, 3]
    hypotheses: np.ndarray  # [F, N, J, 3]
    spread: np.ndarray  # [F, J]
    weak: np.ndarray  # [F, J]
    pose2d: np.ndarray  # [F, J, 2]
    keypoints2d: np.ndarray  # [F, J, 2]
    frame_index: np.ndarray  # [F]
    joint_names: tuple[str, ...]
    meta: dict
    frame_id: Optional[np.ndarray] = None  # [F] the input's own ids (COCO image_id), if it had them
    path: Optional[Path] = None  # the file it was read from (named in errors)
    unreliable: Optional[np.ndarray] = None  # [F] (outputs of older versions lack it)


def npz_member_memmap(path: PathLike, name: str) -> Optional[np.ndarray]:
    """A read-only memory map of the array `name` inside an uncompressed .npz (as np.savez writes
    them), so one frame of a long lift output is read without reading the whole archive; None if
    the member is compressed or not a plain numeric array (then read it normally)."""
    import struct
    import zipfile

    from numpy.lib import format as npf

    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(name + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)  # the member's local header: name and extra-field lengths at 26 and 28
            if local[:4] != b"PK\x03\x04":
                return None
            n_name, n_extra = struct.unpack("<HH", local[26:30])
            f.seek(info.header_offset + 30 + n_name + n_extra)
            version = npf.read_magic(f)
            read_header = {(1, 0): npf.read_array_header_1_0, (2, 0): npf.read_array_header_2_0}.get(version)
            if read_header is None:
                return None
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
        if dtype.hasobject or 0 in shape:
            return None
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    except (KeyError, OSError, ValueError, zipfile.BadZipFile, struct.error):
        return None


_OUTPUT_KEYS = ("pose3d", "hypotheses", "spread", "weak", "pose2d", "keypoints2d", "frame_index")


def read_lift_output(path: PathLike) -> LiftOutput:
    """Read what `diffupose lift` wrote (.npz or .json); raises KeypointError if it is not that."""
    import zipfile

    path = require_regular_file(path, "lift output", error=KeypointError, missing=KeypointError)
    what = f"{path} is not a diffupose lift output"
    try:
        if path.suffix.lower() == ".json":
            doc = parse_json(path.read_bytes(), str(path), KeypointError)
            if not isinstance(doc, dict) or doc.get("format") != "diffupose-lift":
                raise KeypointError(f"{what} (no \"format\": \"diffupose-lift\")")
            frames = doc["frames"]
            if not frames:
                raise KeypointError(f"{path}: no frames")
            arr = {k: np.array([f[k] for f in frames]) for k in _OUTPUT_KEYS if k != "frame_index"}
            arr["frame_index"] = np.array([f["frame"] for f in frames])
            if all("id" in f for f in frames):
                arr["frame_id"] = np.array([f["id"] for f in frames])
            if all("unreliable" in f for f in frames):
                arr["unreliable"] = np.array([f["unreliable"] for f in frames], dtype=bool)
            names, meta = tuple(doc["joint_names"]), doc["meta"]
        elif path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in _OUTPUT_KEYS + ("joint_names", "meta") if k not in z.files]
                if missing:
                    raise KeypointError(f"{what} (missing {', '.join(missing)})")
                names, meta = tuple(str(n) for n in z["joint_names"]), parse_json(str(z["meta"]), f"{path}[meta]",
                                                                                     KeypointError)
                keys = [k for k in _OUTPUT_KEYS + ("frame_id", "unreliable") if k in z.files]
                arr = {k: npz_member_memmap(path, k) for k in keys}
                arr = {k: (z[k] if a is None else a) for k, a in arr.items()}
        else:
            raise KeypointError(f"{what}: expected .npz or .json")
    except (KeyError, TypeError, ValueError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, KeypointError):
            raise
        raise KeypointError(f"{what} ({one_line(e)})") from None
    if not isinstance(meta, dict):
        raise KeypointError(f"{what} (meta is a {type(meta).__name__}, not an object)")
    for k in _OUTPUT_KEYS:
        if arr[k].dtype.kind not in ("iu" if k == "frame_index" else "fiub"):
            raise KeypointError(f"{what} ({k} holds {arr[k].dtype}, not {'whole ' if k == 'frame_index' else ''}"
                                "numbers)")
    out = LiftOutput(**arr, joint_names=names, meta=meta, path=path)
    F, N, J = out.hypotheses.shape[:3] if out.hypotheses.ndim == 4 else (0, 0, 0)
    if out.hypotheses.ndim != 4 or out.pose3d.shape != (F, J, 3) or len(names) != J or out.pose2d.shape != (F, J, 2):
        raise KeypointError(f"{what} (inconsistent array shapes)")
    return out
