"""The value checks between a keypoint file and the model: what is refused (NaN, empty frames, a
wrong image size or unit), what is flagged and stood in for (undetected joints, joints far off the
image: the value policy of README "What is refused"), the joint order of 17-joint input, and the
chunks handed to the model (screen-normalised, in the model's layout).

Coordinates: pixels with the image size, normalised to the model's screen coordinates
x / w * 2 - [1, h / w] (diffupose.data.cameras), or already normalised; MediaPipe's fractions of
the image (layouts.UNIT_SQUARE_LAYOUTS) are turned into pixels first (`unit_square_to_pixels`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Iterator, Optional, Sequence

import numpy as np

from ..skeleton import SKELETONS
from .errors import KeypointError
from .layouts import LAYOUT_JOINTS, UNIT_SQUARE_LAYOUTS, compare_layouts, convert_layout
from .readers import Keypoints


def iter_chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for s in range(0, n, size):
        yield s, min(n, s + size)


def _frames_text(frames: Sequence[int], frame_ids: Optional[np.ndarray] = None, limit: int = 8,
                 total: Optional[int] = None) -> str:
    """'frames 3, 17 and 5 more' (image_ids where the input has them); total: how many there are
    when `frames` holds only the first few."""
    total = len(frames) if total is None else total
    shown = [str(frame_ids[f]) if frame_ids is not None else str(f) for f in frames[:limit]]
    more = f" and {total - len(shown)} more" if total > len(shown) else ""
    what = "image_ids" if frame_ids is not None else "frames"
    return f"{what} {', '.join(shown)}{more}"


# The value policy (README "What is refused"): a joint more than one image size past the image's
# border (pixels: x outside [-W, 2W] or y outside [-H, 2H]; normalised input, whose image height is
# unknown: |x| or |y| > OFF_IMAGE_NORMALIZED, one width past a landscape image's border and then
# some) is no measurement of the person: a detector's garbage (1e30, -1e30, a joint 9,000 px
# away). Fed as it is, it drags the whole GCN input with it and the pose comes out metres off
# with a spread of 0, i.e. looking certain. Such a joint is treated like an undetected one
# (pixel 0, 0): flagged weak and given a stand-in position (`stand_in_missing`), and its frame is
# marked unreliable; a frame with no usable joint at all is an empty frame.
OFF_IMAGE_NORMALIZED = 4.0
# A frame with more than this fraction of its joints weak is marked unreliable too (an all-zero
# score column: every joint weak, every frame unreliable, and a warning).
UNRELIABLE_WEAK_FRACTION = 0.5


def off_image(xy: np.ndarray, image_size: Optional[tuple[float, float]]) -> np.ndarray:
    """[..., J] True where a joint of xy [..., J, 2] lies more than one image size past the border
    (image_size (W, H) for pixels, None for screen-normalised coordinates)."""
    if image_size is None:
        return (np.abs(xy) > OFF_IMAGE_NORMALIZED).any(-1)
    w, h = image_size
    x, y = xy[..., 0], xy[..., 1]
    return (x < -w) | (x > 2 * w) | (y < -h) | (y > 2 * h)


def unusable_joints(xy: np.ndarray, pixel: bool, image_size: Optional[tuple[float, float]]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(undetected, off the image), both [..., J], for finite xy [..., J, 2]: the joints whose
    coordinates are not a measurement. Undetected: exactly pixel (0, 0) (normalised input has no
    such marker: (0, 0) is the image centre)."""
    undetected = (xy == 0).all(-1) if pixel else np.zeros(xy.shape[:-1], dtype=bool)
    return undetected, off_image(xy, image_size if pixel else None) & ~undetected


def unit_square_to_pixels(kp: Keypoints, stated: Optional[str], image_size: Optional[tuple[float, float]],
                          normalized: bool) -> tuple[Keypoints, Optional[str]]:
    """(kp in pixels, a note or None). MediaPipe's landmarks (layouts.UNIT_SQUARE_LAYOUTS: stated,
    the file's, or the only layout of that many joints) are fractions of the image width and height:
    x * W, y * H makes them pixels, after which they are checked like any pixel input (an all-zero
    frame stays a detector miss)."""
    candidates = [n for n, j in LAYOUT_JOINTS.items() if len(j) == kp.num_joints]
    layout = stated or kp.layout or (candidates[0] if len(candidates) == 1 else None)
    if layout not in UNIT_SQUARE_LAYOUTS:
        return kp, None
    if normalized or image_size is None:
        raise KeypointError(f"{kp.path}: {layout} landmarks are fractions of the image width and height (0 to 1): "
                            "pass --image-size W H of the video they come from"
                            + (", not --normalized (that is the model's screen normalisation)" if normalized else ""))
    w, h = image_size
    scale = np.array([w, h] + [1.0] * (kp.data.shape[2] - 2))
    data = np.asarray(kp.data, dtype=np.float64) * scale
    return replace(kp, data=data, layout=layout, notes=list(kp.notes)), (
        f"{layout} landmarks are fractions of the image: multiplied by {w:g} x {h:g} (--image-size) to pixels")


@dataclass
class InputPlan:
    """What `check_keypoints` decided: the frames to lift and how to read their coordinates."""

    frames: np.ndarray  # [F_kept] int64 indices into the input
    skipped: np.ndarray  # [F_skipped] frames skipped: empty (detector misses) or without a usable joint
    pixel: bool  # coordinates are pixels (normalise with image_size) or already normalised
    image_size: Optional[tuple[float, float]]
    missing_joints: int  # joints at exactly (0, 0) in pixel input: undetected, marked weak
    frames_with_missing: int
    off_image_joints: int = 0  # joints far outside the image in the kept frames: treated as missing
    frames_with_off_image: int = 0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # shown even with -q: the result needs care


def check_keypoints(kp: Keypoints, *, image_size: Optional[tuple[float, float]], normalized: bool,
                    skip_empty: bool, chunk: int = 65536) -> InputPlan:
    """Refuse what cannot be lifted correctly (one pass over the data, chunked so a memory-mapped
    input is never read whole): NaN or infinite values, empty frames (all zeros or all NaN: a
    detector miss) and frames without a usable joint (every joint undetected or far off the
    image), both skipped with skip_empty, pixel input without an image size, an image size the
    keypoints do not fit, 'normalised' values that look like pixels. Joints far off the image are
    counted (prepare_chunk treats them as missing); a score channel that is all <= 0 is warned of."""
    if image_size is not None and normalized:
        raise KeypointError("give either --image-size (pixel input) or --normalized, not both")
    if image_size is not None and not all(math.isfinite(v) and v > 0 for v in image_size):
        raise KeypointError(f"--image-size must be two positive numbers, got {image_size}")
    F, J = kp.num_frames, kp.num_joints
    empty, bad, no_usable = [], [], []
    n_missing = frames_missing = n_off = frames_off = 0
    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    outside = counted = 0
    score_max = -np.inf
    pixel = image_size is not None
    units_known = pixel or normalized  # else the run is refused below, once the ranges are known
    for s, e in iter_chunks(F, chunk):
        a = np.asarray(kp.data[s:e], dtype=np.float64)
        xy = a[..., :2]
        nan_xy = np.isnan(xy).all(-1).all(-1)  # the whole frame NaN: some detectors' "no person"
        zero = (xy == 0).all(-1).all(-1)
        is_empty = nan_xy | zero
        finite = np.isfinite(a).all(-1).all(-1)
        bad.extend((np.flatnonzero(~finite & ~is_empty) + s).tolist())
        empty.extend((np.flatnonzero(is_empty) + s).tolist())
        keep = ~is_empty & finite
        if kp.has_scores and keep.any():
            score_max = max(score_max, float(a[keep][..., 2].max()))
        xy = xy[keep]
        if xy.size == 0:
            continue
        miss, far = unusable_joints(xy, pixel, image_size)
        if not units_known:
            far[:] = False
        pts = xy[~miss]
        if pts.size:  # the ranges (for the messages) over every detected joint
            lo, hi = np.minimum(lo, pts.min(0)), np.maximum(hi, pts.max(0))
        none_usable = (miss | far).all(-1)
        no_usable.extend((np.flatnonzero(keep)[none_usable] + s).tolist())
        xy, miss, far = xy[~none_usable], miss[~none_usable], far[~none_usable]
        n_missing += int(miss.sum())
        frames_missing += int(miss.any(-1).sum())
        n_off += int(far.sum())
        frames_off += int(far.any(-1).sum())
        # the share outside the image, which tells a wrong image size or unit, over the frames with
        # a usable joint: a few frames of pure garbage (-1e30) are not a sign of a wrong size
        pts = xy[~miss]
        counted += len(pts)
        if pixel:
            w, h = image_size
            out = ((pts[:, 0] < -0.25 * w) | (pts[:, 0] > 1.25 * w)
                   | (pts[:, 1] < -0.25 * h) | (pts[:, 1] > 1.25 * h))
            outside += int(out.sum())
        else:
            outside += int((np.abs(pts) > OFF_IMAGE_NORMALIZED).any(-1).sum())
    if bad:
        raise KeypointError(f"{kp.path}: NaN or infinite values in {_frames_text(bad, kp.frame_ids)}")
    if len(empty) and not skip_empty:
        raise KeypointError(f"{kp.path}: {len(empty)} of {F} frames are empty (all zeros or NaN: no person "
                            f"detected): {_frames_text(empty, kp.frame_ids)}; pass --skip-empty to leave them out")
    if image_size is None and not normalized:
        if counted and np.all(np.abs(np.concatenate([lo, hi])) <= 2):
            raise KeypointError(f"{kp.path}: coordinates lie within [{lo.min():.3g}, {hi.max():.3g}]: if they are "
                                "screen-normalised (x / w * 2 - 1), pass --normalized; if pixels, --image-size W H")
        raise KeypointError(f"{kp.path}: pixel keypoints (x up to {hi[0]:.4g}, y up to {hi[1]:.4g}) need the image "
                            "size: pass --image-size W H (or --normalized if already screen-normalised)")
    # no frame with a usable joint at all: the coordinates do not fit the image, whatever their share
    frac = outside / counted if counted else float(len(no_usable) > 0)
    if pixel:
        w, h = image_size
        if frac > 0.05:
            raise KeypointError(f"{kp.path}: {100 * frac:.0f}% of the keypoints lie far outside the {w:g} x {h:g} "
                                f"image (x in [{lo[0]:.4g}, {hi[0]:.4g}], y in [{lo[1]:.4g}, {hi[1]:.4g}]): "
                                "check --image-size")
        if counted and hi.max() <= 1.0 and lo.min() >= 0.0 and max(w, h) > 2:
            raise KeypointError(f"{kp.path}: every coordinate lies within [0, 1]: these look normalised to the unit "
                                f"square, not pixels of a {w:g} x {h:g} image; multiply x by W and y by H first")
    elif frac > 0.05:
        raise KeypointError(f"{kp.path}: --normalized, but {100 * frac:.0f}% of the keypoints lie beyond "
                            f"+-{OFF_IMAGE_NORMALIZED:g} (|x| up to {max(abs(lo[0]), abs(hi[0])):.4g}): these look "
                            "like pixels; pass --image-size W H")
    where = (f"more than one image size outside the {image_size[0]:g} x {image_size[1]:g} image" if pixel
             else f"beyond +-{OFF_IMAGE_NORMALIZED:g} in normalised units")
    if len(no_usable) and not skip_empty:
        raise KeypointError(f"{kp.path}: {len(no_usable)} of {F} frames have no usable joint (every joint undetected "
                            f"or {where}): {_frames_text(no_usable, kp.frame_ids)}; pass --skip-empty to leave "
                            "them out")
    skipped = np.array(sorted(empty + no_usable), dtype=np.int64)
    frames = np.setdiff1d(np.arange(F, dtype=np.int64), skipped)
    if len(frames) == 0:
        raise KeypointError(f"{kp.path}: all {F} frames are empty or have no usable joint; nothing to lift")
    notes, warnings = [], []
    if len(empty):
        notes.append(f"skipped {len(empty)} empty frames ({_frames_text(empty, kp.frame_ids)})")
    if len(no_usable):
        notes.append(f"skipped {len(no_usable)} frames with no usable joint ({_frames_text(no_usable, kp.frame_ids)})")
    if n_missing:
        notes.append(f"{n_missing} undetected joints (at pixel 0,0) in {frames_missing} frames: marked weak and "
                     "given a stand-in position; those frames are marked unreliable")
    if n_off:
        warnings.append(f"{kp.path}: {n_off} joints in {frames_off} frames lie {where}: treated as undetected "
                        "(marked weak, given a stand-in position, the frames marked unreliable)")
    if kp.has_scores and score_max <= 0:
        warnings.append(f"{kp.path}: every detector score is {score_max:g} or below: no joint was seen with any "
                        "confidence, so with --min-score above that every joint is weak and every frame unreliable "
                        "(if the third channel is not a confidence, drop it)")
    return InputPlan(frames=frames, skipped=skipped, pixel=pixel, image_size=image_size,
                     missing_joints=n_missing, frames_with_missing=frames_missing, off_image_joints=n_off,
                     frames_with_off_image=frames_off, notes=notes, warnings=warnings)


def sample_poses(kp: Keypoints, frames: np.ndarray, n: int = 2000, pixel: bool = True) -> np.ndarray:
    """Up to n evenly spaced frames [n, J, 2] among `frames` with no undetected (0, 0) joint."""
    pick = frames[np.linspace(0, len(frames) - 1, min(n, len(frames))).astype(np.int64)]
    xy = np.asarray(kp.data[np.unique(pick)][..., :2], dtype=np.float64)
    if pixel:
        xy = xy[~(xy == 0).all(-1).any(-1)]
    return xy


def resolve_layout(kp: Keypoints, stated: Optional[str], frames: np.ndarray, pixel: bool,
                   check: bool = True) -> tuple[str, Optional[str]]:
    """(the input's layout, a note for the user or None). 17-joint inputs could be COCO or H36M
    order: a stated layout is checked against the bone lengths; without one, the file's own
    (COCO JSON) is used or the clearer of the two is chosen, and an unclear case is refused."""
    J = kp.num_joints
    if stated is not None:
        if len(LAYOUT_JOINTS[stated]) != J:
            raise KeypointError(f"{kp.path}: {J} joints per frame, but --layout {stated} has "
                                f"{len(LAYOUT_JOINTS[stated])}")
    candidates = [n for n, j in LAYOUT_JOINTS.items() if len(j) == J]
    layout = stated or kp.layout
    if J != 17:
        return layout or candidates[0], None
    xy = sample_poses(kp, frames, pixel=pixel)
    guess, ratio = compare_layouts(xy) if len(xy) else (None, float("nan"))
    if layout is None:
        if guess is None:
            raise KeypointError(f"{kp.path}: 17 joints per frame could be COCO or Human3.6M order and the poses do "
                                "not say which clearly: pass --layout coco17 or --layout h36m17")
        return guess, f"layout {guess} (from the bone lengths; pass --layout to state it)"
    if check and guess is not None and guess != layout:
        return_hint = "--layout " + guess
        why = ("the face points are spread over the body" if layout == "coco17"
               else "the pelvis is not between the hips")
        raise KeypointError(f"{kp.path}: the keypoints look like {guess} order, not {layout} (read as {layout}, "
                            f"{why}); pass {return_hint}, or --no-layout-check if you are sure")
    return layout, None


def screen_normalize(xy: np.ndarray, w: float, h: float) -> np.ndarray:
    """Pixels -> the model's screen coordinates: x / w * 2 - [1, h / w] (as data/cameras.py)."""
    from ..data.cameras import normalize_screen_coordinates

    return normalize_screen_coordinates(xy, w, h)


@functools.lru_cache(maxsize=None)
def _hop_distances(skeleton_name: str) -> np.ndarray:
    """[J, J] number of bones between two joints of a skeleton (Floyd-Warshall on 17 nodes)."""
    skel = SKELETONS[skeleton_name]
    J = skel.num_joints
    d = np.full((J, J), np.inf)
    np.fill_diagonal(d, 0)
    for c, p in skel.bones:
        d[c, p] = d[p, c] = 1
    for k in range(J):
        d = np.minimum(d, d[:, k:k + 1] + d[k:k + 1, :])
    return d


def stand_in_missing(xy: np.ndarray, missing: np.ndarray, skeleton_name: str) -> np.ndarray:
    """xy [n, J, 2] with each missing joint replaced by the mean of the usable joints nearest to it
    along the skeleton's bones (a wrist by its elbow, the pelvis by a usable hip): a short bone
    the model can lift, where the raw value (pixel 0,0 or 1e30) would drag the whole pose off.
    Every frame must have a usable joint (check_keypoints skips or refuses the others)."""
    d = _hop_distances(skeleton_name)
    usable = ~missing
    dist = np.where(usable[:, None, :], d[None], np.inf)  # [n, J (missing), J (candidate)]
    nearest = dist == dist.min(-1, keepdims=True)
    nearest &= np.isfinite(dist)
    count = nearest.sum(-1, keepdims=True)
    src = np.where(usable[..., None], xy, 0.0)  # never multiply a garbage value, even by 0
    fill = np.einsum("njk,nkc->njc", nearest.astype(xy.dtype), src) / np.maximum(count, 1)
    return np.where(missing[..., None], fill, xy)


@dataclass
class PreparedChunk:
    """A chunk of frames ready to lift, in the model's joint order."""

    pose2d: np.ndarray  # [n, J, 2] the model's input, screen-normalised
    keypoints2d: np.ndarray  # [n, J, 2] the same in the input's units (a missing joint: its stand-in)
    weak: np.ndarray  # [n, J] score below min_score, undetected, or off the image
    score: Optional[np.ndarray]  # [n, J] or None
    missing: np.ndarray  # [n, J] undetected or off the image: lifted from a stand-in position
    unreliable: np.ndarray  # [n] a missing joint, or more than UNRELIABLE_WEAK_FRACTION of the joints weak


def prepare_chunk(kp: Keypoints, frames: np.ndarray, plan: InputPlan, src: str, dst: str,
                  min_score: float) -> PreparedChunk:
    """The input frames `frames` (kept by check_keypoints), in the model's layout dst: joints that
    are undetected or far off the image are flagged and replaced (`stand_in_missing`), never fed
    as they are; the frames they are in, and those mostly weak, are marked unreliable."""
    a = np.asarray(kp.data[frames], dtype=np.float64)
    xy = a[..., :2]
    score = a[..., 2] if kp.has_scores else None
    undetected, far = unusable_joints(xy, plan.pixel, plan.image_size)
    with np.errstate(over="ignore", invalid="ignore"):  # a derived joint of garbage sources: replaced below
        xy, score, missing = convert_layout(xy, score, undetected | far, src, dst)
    none = missing.all(-1)
    if none.any():  # only joints the model's skeleton does not use are usable (COCO's ears, say)
        raise KeypointError(f"{kp.path}: no joint the {dst} skeleton uses is usable in "
                            f"{_frames_text(frames[none].tolist(), kp.frame_ids)}; leave those frames out or fix them")
    if missing.any():
        xy = stand_in_missing(xy, missing, dst)
    weak = missing.copy()
    if score is not None:
        weak |= score < min_score
    unreliable = missing.any(-1) | (weak.mean(-1) > UNRELIABLE_WEAK_FRACTION)
    pose2d = screen_normalize(xy, *plan.image_size) if plan.pixel else xy
    return PreparedChunk(pose2d=pose2d.astype(np.float32), keypoints2d=xy.astype(np.float32), weak=weak,
                         score=None if score is None else score.astype(np.float32), missing=missing,
                         unreliable=unreliable)

