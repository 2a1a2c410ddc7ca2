"""The Python API: 2D keypoints of a video in, 3D poses in metres out.

    import diffupose
    lifter = diffupose.load_lifter()                      # the shipped checkpoint, CPU or GPU
    result = lifter.lift("keypoints.json", image_size=(1920, 1080))
    result.pose3d                                          # [F, 17, 3] metres

`load_lifter` loads a checkpoint (the shipped GCN, trained on the CMU and HDM05 sets, by default) and fixes the sampling
settings; `PoseLifter.lift` takes a keypoint file (any format `diffupose.keypoints.read_keypoints`
reads: COCO / COCO-WholeBody JSON, an OpenPose folder, MediaPipe JSON or CSV, .npy/.npz, CSV) or a
numpy array [frames, joints, 2 or 3], runs the same checks as `diffupose lift` (the same one-line
messages: `KeypointError`, `LiftError`, `CheckpointError` are all ValueErrors) and returns a
`Lifted` with named fields. `diffupose lift` is this module behind argparse (cli.cmd_lift): it
calls `read_input`, `load_lifter`, then `PoseLifter.iter_lift` to stream long inputs to disk.

Video: `load_lifter(smooth="oneeuro", fps=30)` smooths the aggregate pose over time (the One Euro
filter of diffupose.smoothing, causal, its state carried from batch to batch of one lift), in
`iter_lift`, so `lift`, `Lifted.save` and `lift_to_file` give the same poses; the hypotheses and the
spread are left as lifted. The frame rate (also a BVH's frame time) is `fps`, else the input's
where it states one, else DEFAULT_FPS, said through on_note where it matters.

Poses are root-relative (the pelvis at 0) in the camera frame of the training data (x right, y
down, z forward), in metres. The model (engine.Lifter) is wrapped, not copied.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence, Union

import numpy as np

from .keypoints import (COCO_TO_H36M17, DETECTOR_TO_COCO17, InputPlan, KeypointError, Keypoints, Person,
                        PreparedChunk, check_conversion, check_keypoints, iter_chunks, parse_person, prepare_chunk,
                        read_keypoints, resolve_layout, unit_square_to_pixels)
from .keypoints.checks import _frames_text
from .smoothing import SMOOTHERS

if TYPE_CHECKING:
    import torch

from .checkpoint import DEFAULT_CHECKPOINT  # noqa: E402 (re-exported: the API's default)
TRAIN_HINT = "python train/h36m.py --dataset cmu --out runs/cmu"  # writes runs/cmu/model.{safetensors,json}
DTYPES = ("fp32", "bf16", "fp16")
DEFAULT_STEPS = 5
DEFAULT_MIN_SCORE = 0.3
ARRAY_NAME = "<array>"  # how an array handed in is named in messages


class LiftError(ValueError):
    """A user-facing failure outside the keypoints themselves (device, checkpoint, backend, the
    model's output): the message is one line; the CLI prints it as its error."""


# ---------------------------------------------------------------------------------------------
# the result
# ---------------------------------------------------------------------------------------------
@dataclass
class Lifted:
    """What `PoseLifter.lift` returns. F: the frames lifted (frames skipped with skip_empty are not
    rows: `frame_index` says which input frame each row is), N hypotheses, J joints (17).
    3D arrays are metres, root-relative, camera frame (x right, y down, z forward)."""

    pose3d: np.ndarray  # [F, J, 3] the aggregate of the hypotheses (mean, or per-joint median)
    hypotheses: np.ndarray  # [F, N, J, 3]
    spread: np.ndarray  # [F, J] RMS distance of the hypotheses from their mean (metres)
    weak: np.ndarray  # [F, J] bool: score below min_score, undetected, or off the image
    unreliable: np.ndarray  # [F] bool: a joint undetected / off the image, or most joints weak
    keypoints2d: np.ndarray  # [F, J, 2] the input coordinates in the model's joint order (stand-ins included)
    pose2d: np.ndarray  # [F, J, 2] the model's input (screen-normalised)
    score: Optional[np.ndarray]  # [F, J] detector scores in the model's joint order, if the input had them
    frame_index: np.ndarray  # [F] int64 input frame of each row
    frame_ids: Optional[np.ndarray]  # [F] the input's own ids (COCO image_id, OpenPose file number), if any
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    settings: dict  # the sampling settings used (hypotheses, steps, sampler, flip, seed, device, backend, ...)
    meta: dict  # everything a lift output file records (settings, input, checkpoint, units)
    notes: list[str] = field(default_factory=list)  # what was done with the input (skipped frames, layout)
    warnings: list[str] = field(default_factory=list)  # what needs care (off-image joints, unreliable frames)
    _input_frame_ids: Optional[np.ndarray] = field(default=None, repr=False)  # [F_input] ids, for the writers

    @property
    def num_frames(self) -> int:
        return int(self.pose3d.shape[0])

    @property
    def radius(self) -> Optional[np.ndarray]:
        """[F, J] metres, where the checkpoint has a spread calibration (diffupose/calibration.py):
        factor x scale_j x spread, the distance from the aggregate within which 90% (its `coverage`)
        of the joint's errors fell on validation data like the training data; else None."""
        from .calibration import radius

        return radius(self.spread, (self.meta.get("checkpoint") or {}).get("calibration"))

    def save(self, path: Union[str, Path]) -> Path:
        """Write to .npz or .json (the `diffupose lift` output, read back by
        diffupose.keypoints.read_lift_output and drawn by `diffupose viz`), .bvh or .csv (the
        aggregate only: diffupose/export.py; the BVH's frame time from settings["fps"]), or to a
        format of `diffupose.keypoints.writers.CLIP_WRITERS`. The file appears complete or not at all."""
        from .keypoints import LiftWriter, check_output_path
        from .keypoints.writers import CLIP_WRITERS, output_formats

        out = check_output_path(path, formats=output_formats())
        check_output_skeleton(out, self.joint_names, self.parents)
        clip_writer = CLIP_WRITERS.get(out.suffix.lower())
        if clip_writer is not None:
            clip_writer(self, out)
            return out
        w = LiftWriter(out, frames=self.num_frames, n_hyp=self.hypotheses.shape[1], joint_names=self.joint_names,
                       meta=self.meta, has_scores=self.score is not None,
                       frame_ids=self._input_frame_ids)
        try:
            w.write(pose3d=self.pose3d, hypotheses=self.hypotheses, spread=self.spread, weak=self.weak,
                    unreliable=self.unreliable, pose2d=self.pose2d, keypoints2d=self.keypoints2d,
                    frame_index=self.frame_index, score=self.score)
            return w.close()
        except BaseException:
            w.abort()
            raise


@dataclass
class LiftSummary:
    """What `PoseLifter.lift_to_file` did, for a summary line (memory bounded: only sums and the
    first few unreliable frames)."""

    frames: int
    spread_sum: float  # metres, over frames and joints
    weak_joints: int
    unreliable_frames: int
    unreliable_first: list[int]  # up to 8 input frame indices
    removed_stale: list[Path]  # temporaries of killed earlier lifts to the same output, removed
    seconds: float


# ---------------------------------------------------------------------------------------------
# the input
# ---------------------------------------------------------------------------------------------
@dataclass
class LiftInput:
    """An input read and checked, ready to lift (`read_input`)."""

    kp: Keypoints
    plan: InputPlan
    layout: str  # the input's joint layout
    layout_source: str  # "stated", "file" or "inferred from the poses"
    min_score: float
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.plan.frames)


def as_keypoints(keypoints, scores=None, key: Optional[str] = None, person: Person = None) -> Keypoints:
    """A file path (str / Path) read by read_keypoints, or an array [F, J, 2 or 3] (scores [F, J]
    appended as the third channel), as `Keypoints`."""
    if isinstance(keypoints, Keypoints):
        kp = keypoints
    elif isinstance(keypoints, (str, Path)):
        kp = read_keypoints(keypoints, key=key, person=person)
    else:
        try:
            a = np.asarray(keypoints)
        except Exception as e:  # noqa: BLE001 - ragged lists and the like
            raise KeypointError(f"{ARRAY_NAME}: not an array of numbers ({type(e).__name__}: {e})") from None
        if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise KeypointError(f"{ARRAY_NAME}: keypoints must be numbers, got dtype {a.dtype}")
        if a.ndim == 2 and a.shape[-1] in (2, 3):
            a = a[None]  # one frame
        kp = Keypoints(a, Path(ARRAY_NAME), "array")
        from .keypoints.readers import _check_shape

        _check_shape(kp)
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64)
        if kp.has_scores:
            raise KeypointError(f"{kp.path}: the keypoints already have a score channel; pass scores=None")
        if s.shape != kp.data.shape[:2]:
            raise KeypointError(f"{kp.path}: scores have shape {s.shape}, expected [frames, joints] = "
                                f"{tuple(kp.data.shape[:2])}")
        kp = Keypoints(np.concatenate([np.asarray(kp.data, dtype=np.float64), s[..., None]], -1), kp.path, kp.kind,
                       layout=kp.layout, frame_ids=kp.frame_ids, notes=list(kp.notes))
    return kp


def read_input(keypoints, *, layout: Optional[str] = None, image_size: Optional[Sequence[float]] = None,
               scores=None, normalized: bool = False, skip_empty: bool = False, min_score: float = DEFAULT_MIN_SCORE,
               person: Person = None, key: Optional[str] = None, check_layout: bool = True) -> LiftInput:
    """Read (a path) or take (an array) 2D keypoints and check them (checks.check_keypoints: NaN,
    empty frames, units, the image size, the joint order); raises KeypointError (one line).

    keypoints: a path or an array [F, J, 2 or 3] (x, y[, score]) in pixels (with image_size (W, H)),
    screen-normalised (normalized=True), or for MediaPipe fractions of the image (with image_size);
    layout: the joint order (coco17, h36m17, h36m16, humaneva15, body25, mediapipe33,
    coco_wholebody; default: the file's, or recognised); person: which one where a frame has
    several (auto, "best" or a track id); min_score: joints scored below it are flagged weak."""
    from .keypoints import LAYOUTS

    if layout is not None and layout not in LAYOUTS:
        raise KeypointError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if not (isinstance(min_score, (int, float)) and np.isfinite(min_score)):
        raise KeypointError(f"min_score must be a finite number, got {min_score!r}")
    size = None if image_size is None else tuple(float(v) for v in image_size)
    if size is not None and len(size) != 2:
        raise KeypointError(f"image_size must be (width, height), got {image_size!r}")
    person = parse_person(person)  # refused here whether or not the file has several people
    kp = as_keypoints(keypoints, scores, key, person)
    notes = list(kp.notes)
    kp, unit_note = unit_square_to_pixels(kp, layout, size, normalized)
    if unit_note:
        notes.append(unit_note)
    plan = check_keypoints(kp, image_size=size, normalized=normalized, skip_empty=skip_empty)
    resolved, layout_note = resolve_layout(kp, layout, plan.frames, plan.pixel, check=check_layout)
    if layout_note:
        notes.append(layout_note)
    notes += plan.notes
    source = "stated" if layout else ("file" if kp.layout else "inferred from the poses")
    return LiftInput(kp, plan, resolved, source, float(min_score), notes, list(plan.warnings))


def mapping_of(layout: str, skeleton: str):
    """How input joints become the model's (recorded in the output's meta)."""
    if layout == skeleton:
        return None, None
    if layout == "coco17" or layout in DETECTOR_TO_COCO17:
        via = "" if layout == "coco17" else f"{layout}'s COCO-17 joints selected by name, then "
        mapping = {name: list(COCO_TO_H36M17[name]) for name in _skeleton(skeleton).joints}
        return mapping, (f"approximate: {via}COCO has no pelvis, spine, thorax or head top; pelvis = mid-hips, "
                         "thorax = mid-shoulders, spine = mid(pelvis, thorax), head = mid-eyes; derived scores = min "
                         "of the sources")
    return f"{layout} -> {skeleton}: joints selected by name", None


def _skeleton(name: str):
    from .skeleton import SKELETONS

    return SKELETONS[name]


def unreliable_text(count: int, total: int, first: Sequence[int], frame_ids) -> str:
    which = _frames_text(list(first), frame_ids, total=count)
    return (f"{count} of {total} frames are unreliable (a joint undetected or off the image, or most joints weak): "
            f"{which}; their poses are guesses, whatever their spread: see `unreliable` in the output")


def check_output_skeleton(path: Union[str, Path], joint_names: Sequence[str], parents: Sequence[int]) -> None:
    """A .bvh output needs a skeleton diffupose.export has a rest pose for; LiftError (one line) if not."""
    if Path(path).suffix.lower() != ".bvh":
        return
    from .export import check_bvh_skeleton

    try:
        check_bvh_skeleton(joint_names, parents)
    except ValueError as e:
        raise LiftError(f"output {path}: {e}") from None


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
def resolve_device(spec: Union[str, "torch.device"] = "auto"):
    """'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:N' or a torch.device; LiftError if unusable."""
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise LiftError(f"--device {spec!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LiftError(f"--device {spec}: no CUDA device is available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LiftError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise LiftError(f"--device {spec}: only cpu and cuda are supported")
    return dev


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise LiftError(f"--dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def load_model(checkpoint: Optional[Union[str, Path]], device, allow_regressor: bool = False,
               shipped: Path = DEFAULT_CHECKPOINT):
    """(model, diffusion, config, the checkpoint's weights path); LiftError for anything unusable.
    checkpoint None: the shipped one (`shipped`). allow_regressor: accept the deterministic
    regressor of the ablations (eval scores it; lifting hypotheses needs a diffusion denoiser)."""
    from .checkpoint import CheckpointError, checkpoint_paths, load_checkpoint
    from .model import is_regressor

    path = Path(checkpoint).expanduser() if checkpoint else Path(shipped)
    wpath, cpath = checkpoint_paths(path)
    if checkpoint is None and not (wpath.exists() or cpath.exists()):
        raise LiftError(f"the shipped checkpoint is missing: {wpath} (and {cpath.name}) not found, this install has "
                        f"no trained model yet; train one with `{TRAIN_HINT}` (minutes on a CPU) and pass "
                        "--checkpoint runs/cmu/model, or pass --checkpoint STEM of any <stem>.safetensors + "
                        "<stem>.json pair written by diffupose training")
    if checkpoint is not None and not (wpath.exists() or cpath.exists()):
        raise LiftError(f"checkpoint not found: {path} (expected {wpath.name} and {cpath.name} there)")
    try:
        model, diffusion, config = load_checkpoint(path, device)
    except CheckpointError as e:
        raise LiftError(f"unusable checkpoint: {e}") from None
    if is_regressor(model) and not allow_regressor:
        raise LiftError(f"{cpath} is a deterministic regressor (arch {model.cfg.arch!r}), not a diffusion denoiser; "
                        "lifting needs a gcn, mlp or unet checkpoint")
    return model, diffusion, config, wpath


def _first_line(e: BaseException) -> str:
    """The gist of an exception: its first sentence of its first line, bounded."""
    lines = str(e).strip().splitlines()
    text = lines[0].split(". ")[0] if lines else type(e).__name__
    return text[:160]


def pick_backend(requested: str, model, diffusion, device, dtype, note: Callable[[str], None] = lambda s: None) -> str:
    """The backend to lift with. An explicit one must work; 'auto' tries the candidates for the
    device in order with a one-frame lift and falls back past any that fails (a compiled op not
    built for this device, say), naming the reason through `note`."""
    import torch

    from . import engine
    from .ops import backend as B

    probe = torch.zeros(1, model.skeleton.num_joints, 2)

    def runs(name: str) -> None:
        engine.Lifter(model, diffusion, n_hyp=1, steps=1, backend=name, dtype=dtype, cuda_graph=False,
                      device=device)(probe)

    if requested != "auto":
        try:
            B.resolve(requested, device)
            runs(requested)
        except (B.BackendUnavailable, ValueError) as e:
            raise LiftError(f"--backend {requested}: {e}") from None
        except Exception as e:  # a compiled op that is not built for this device, say
            raise LiftError(f"--backend {requested} does not run here ({_first_line(e)}); "
                            "use --backend auto or reference") from None
        return requested
    if device.type == "cuda":
        candidates = [n for n, ok in (("cuda", B.has_cuda_kernels()), ("triton", B.has_triton())) if ok]
    else:
        candidates = ["cpu"] if B.has_extension() else []
    for name in candidates:
        try:
            runs(name)
            return name
        except Exception as e:  # any failure of a compiled kernel: fall back rather than stop
            note(f"backend {name!r} does not run here ({_first_line(e)}); trying the next")
    return "reference"


def sha256_of(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# the lifter
# ---------------------------------------------------------------------------------------------
def load_lifter(checkpoint: Optional[Union[str, Path]] = None, *, device="auto", hypotheses: int = 10,
                steps: Optional[int] = None, sampler: str = "ddim", flip: bool = False, aggregate: str = "mean",
                seed: int = 0, batch_size: Optional[int] = None, backend: str = "auto", dtype: str = "fp32",
                smooth: str = "none", fps: Optional[float] = None, smooth_min_cutoff: Optional[float] = None,
                smooth_beta: Optional[float] = None, on_note: Optional[Callable[[str], None]] = None,
                _shipped: Path = DEFAULT_CHECKPOINT) -> "PoseLifter":
    """A `PoseLifter` for a checkpoint: None for the shipped GCN (cmu_hdm05_gcn), or the stem / folder /
    .safetensors / .json of one written by diffupose training.

    device: 'auto' (CUDA if there is one), 'cpu', 'cuda', 'cuda:N'; hypotheses: N per frame;
    steps: DDIM steps (default 5; sampler 'ddpm' takes all T); flip: test-time flip augmentation;
    aggregate: 'mean' or 'median' of the hypotheses; seed: the same seed and settings give the same
    poses; batch_size: frames per denoiser call (default 1024 on CUDA, 256 on CPU); backend:
    'auto' (the fastest kernels that run here) or reference / cpu / cuda / triton; dtype: 'fp32',
    'bf16', 'fp16' (the denoiser's activations); smooth: 'none' or 'oneeuro' (the One Euro filter
    on the aggregate pose of a video, per joint, causal: never for unrelated images), with
    smooth_min_cutoff (Hz, default diffupose.smoothing.DEFAULT_MIN_CUTOFF) and smooth_beta (Hz per
    m/s, DEFAULT_BETA); fps: the video's frame rate, for smoothing and a BVH's frame time (default:
    the input's where it states one, else diffupose.export.DEFAULT_FPS); on_note: called with notes
    (a backend fallback, an assumed frame rate)."""
    from .engine import AGGREGATES, SAMPLERS, Lifter
    from .ops.backend import BACKENDS
    from .smoothing import DEFAULT_BETA, DEFAULT_D_CUTOFF, DEFAULT_MIN_CUTOFF

    for name, v in (("hypotheses", hypotheses), ("steps", steps if steps is not None else 1),
                    ("batch_size", batch_size if batch_size is not None else 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise LiftError(f"{name} must be a whole number >= 1, got {v!r}")
    for name, v, allowed in (("sampler", sampler, SAMPLERS), ("aggregate", aggregate, AGGREGATES),
                             ("backend", backend, BACKENDS)):
        if v not in allowed:
            raise LiftError(f"{name} {v!r}: expected one of {', '.join(allowed)}")
    if smooth not in SMOOTHERS:
        raise LiftError(f"smooth {smooth!r}: expected one of {', '.join(SMOOTHERS)}")
    min_cutoff = DEFAULT_MIN_CUTOFF if smooth_min_cutoff is None else smooth_min_cutoff
    beta = DEFAULT_BETA if smooth_beta is None else smooth_beta
    for name, v, zero_ok in (("fps", 1.0 if fps is None else fps, False), ("smooth_min_cutoff", min_cutoff, False),
                             ("smooth_beta", beta, True)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and
                (v >= 0 if zero_ok else v > 0)):
            raise LiftError(f"{name} must be a {'number >= 0' if zero_ok else 'positive number'}, got {v!r}")
    note = on_note or (lambda s: None)
    dev = resolve_device(device)
    tdtype = torch_dtype(dtype)
    model, diffusion, config, wpath = load_model(checkpoint, dev, shipped=_shipped)
    if steps is not None and sampler == "ddpm":
        note(f"--steps is ignored by --sampler ddpm (it takes all {diffusion.cfg.T} steps)")
    k = steps or DEFAULT_STEPS
    chosen = pick_backend(backend, model, diffusion, dev, tdtype, note)
    batch = batch_size or (1024 if dev.type == "cuda" else 256)
    engine = Lifter(model, diffusion, n_hyp=hypotheses, steps=k, sampler=sampler, flip=flip, aggregate=aggregate,
                    batch_frames=batch, dtype=tdtype, seed=seed, backend=chosen, device=dev)
    settings = {"hypotheses": hypotheses, "steps": k if sampler == "ddim" else diffusion.cfg.T, "sampler": sampler,
                "flip": flip, "aggregate": aggregate, "seed": seed, "batch_size": batch, "device": str(dev),
                "backend": chosen, "backend_requested": backend, "dtype": dtype, "cuda_graph": engine.use_graph,
                "smooth": ({"filter": smooth, "min_cutoff_hz": float(min_cutoff), "beta": float(beta),
                            "d_cutoff_hz": DEFAULT_D_CUTOFF} if smooth != "none" else {"filter": "none"})}
    return PoseLifter(engine, config, wpath, settings, fps=None if fps is None else float(fps), on_note=note)


class PoseLifter:
    """A loaded model with its sampling settings (`load_lifter`); `lift` turns 2D keypoints into 3D
    poses. `engine` is the diffupose.engine.Lifter it wraps; `settings` what it samples with."""

    def __init__(self, engine, config: dict, weights_path: Path, settings: dict, fps: Optional[float] = None,
                 on_note: Optional[Callable[[str], None]] = None):
        self.engine, self.config, self.weights_path, self.settings = engine, config, Path(weights_path), settings
        self.settings.setdefault("smooth", {"filter": "none"})
        self.fps = fps  # None: the input's, else DEFAULT_FPS (video_fps)
        self._note = on_note or (lambda s: None)
        self.skeleton = engine.skeleton
        self._sha256: Optional[str] = None

    @property
    def smoothing(self) -> bool:
        return self.settings["smooth"]["filter"] != "none"

    def video_fps(self, inp: LiftInput) -> tuple[float, str]:
        """(frames per second, where it came from: "given", "input" or "assumed") for this input."""
        from .export import DEFAULT_FPS

        if self.fps is not None:
            return self.fps, "given"
        if getattr(inp.kp, "fps", None):
            return float(inp.kp.fps), "input"
        return DEFAULT_FPS, "assumed"

    def _say_fps(self, inp: LiftInput, bvh: bool = False) -> Optional[str]:
        """The note that the frame rate is assumed, where it matters (smoothing, a BVH's frame time)."""
        fps, source = self.video_fps(inp)
        if source != "assumed" or not (self.smoothing or bvh):
            return None
        text = f"assuming {fps:g} frames/s (give the video's: --fps, or load_lifter(fps=...))"
        self._note(text)
        return text

    def check_output(self, path: Union[str, Path]) -> None:
        """Refuse an output this model's poses cannot be written to (a BVH of a skeleton without a
        rest pose in diffupose.export); LiftError, one line."""
        check_output_skeleton(path, self.joint_names, self.skeleton.parents)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(self.skeleton.joints)

    def lift(self, keypoints, *, layout: Optional[str] = None, image_size: Optional[Sequence[float]] = None,
             scores=None, normalized: bool = False, min_score: float = DEFAULT_MIN_SCORE, skip_empty: bool = False,
             person: Person = None, key: Optional[str] = None, check_layout: bool = True,
             warn: bool = True) -> Lifted:
        """Lift 2D keypoints to 3D poses in metres (see `Lifted`).

        keypoints: a file path (any format read_keypoints reads) or an array [F, J, 2 or 3]
        (x, y[, score]); image_size: (W, H) in pixels of pixel input (and MediaPipe's fractions);
        scores: [F, J] detector scores for a 2-channel array; layout, normalized, min_score,
        skip_empty, person, key, check_layout: as `read_input` / `diffupose lift`. warn: issue the
        result's warnings (off-image joints, unreliable frames) as Python warnings too. Raises
        KeypointError or LiftError (ValueErrors) with the CLI's one-line messages."""
        inp = read_input(keypoints, layout=layout, image_size=image_size, scores=scores, normalized=normalized,
                         skip_empty=skip_empty, min_score=min_score, person=person, key=key,
                         check_layout=check_layout)
        return self.lift_input(inp, warn=warn)

    def check_input(self, inp: LiftInput) -> None:
        """Refuse an input whose layout cannot be mapped to the model's skeleton."""
        check_conversion(inp.layout, self.skeleton.name)

    def iter_lift(self, inp: LiftInput) -> Iterator[tuple[np.ndarray, PreparedChunk, dict]]:
        """(input frame indices, the prepared 2D chunk, {"pose3d", "hypotheses", "spread"} as numpy
        in metres) per batch of frames: what `lift` collects and `diffupose lift` streams to disk.
        Every call starts the noise from the seed: the same input gives the same poses each time.
        With smoothing (load_lifter's smooth) "pose3d" is the smoothed aggregate: the filter starts
        fresh each call and carries its state from batch to batch (frames left out are longer steps)."""
        import torch

        from .smoothing import OneEuroFilter

        self.check_input(inp)
        self.engine.reseed(self.settings["seed"])
        sm = self.settings["smooth"]
        smoother = OneEuroFilter(self.video_fps(inp)[0], min_cutoff=sm["min_cutoff_hz"], beta=sm["beta"],
                                 d_cutoff=sm["d_cutoff_hz"]) if self.smoothing else None
        skel = self.skeleton
        plan = inp.plan
        for s, e in iter_chunks(len(plan.frames), self.engine.batch_frames):
            idx = plan.frames[s:e]
            c = prepare_chunk(inp.kp, idx, plan, inp.layout, skel.name, inp.min_score)
            r = self.engine(torch.from_numpy(c.pose2d))
            hyp = r.hypotheses.float().cpu()
            if not torch.isfinite(hyp).all():
                dtype = self.settings["dtype"]
                raise LiftError("the model produced NaN or infinite poses"
                                + (f" in {dtype}; try --dtype fp32" if dtype != "fp32" else
                                   "; the checkpoint may be broken"))
            agg = r.mean.float().cpu().numpy()  # root-relative, median if asked
            if smoother is not None:  # the aggregate only; its state runs on across batches
                agg = smoother(agg, idx).astype(np.float32)
            yield idx, c, {"pose3d": agg, "hypotheses": hyp.numpy(), "spread": r.spread.float().cpu().numpy()}

    def meta(self, inp: LiftInput) -> dict:
        """What an output file records: units, the arrays, the input, the settings, the checkpoint."""
        from . import __version__

        skel = self.skeleton
        root = skel.parents.index(-1)
        kp, plan = inp.kp, inp.plan
        mapping, mapping_note = mapping_of(inp.layout, skel.name)
        if self._sha256 is None:
            self._sha256 = sha256_of(self.weights_path)
        fps, fps_source = self.video_fps(inp)
        return {
            "format": "diffupose-lift", "diffupose_version": __version__,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "units": "metres",
            "frame": "camera frame of the training data (x right, y down, z forward); root-relative: each "
                     f"hypothesis is translated so that its root joint ({skel.joints[root]}) is at 0",
            "arrays": {
                "pose3d": "[F, J, 3] the aggregate of the hypotheses" + (
                    f", smoothed over time ({self.settings['smooth']['filter']}: settings.smooth)"
                    if self.smoothing else ""),
                "hypotheses": "[F, N, J, 3]",
                "spread": "[F, J] RMS distance of the hypotheses from their mean, per joint" + (
                    "; checkpoint.calibration: factor x spread_scale[j] x spread held that share (coverage) of the "
                    "validation errors" if self.config.get("calibration") else ""),
                "weak": f"[F, J] detector score below min_score ({inp.min_score}), undetected (2D at pixel 0,0) or "
                        "more than one image size off the image; lifted anyway, treat with care",
                "unreliable": "[F] the frame had a joint undetected or off the image (lifted from a stand-in "
                              "position: the nearest usable joint along the bones) or more than half of its joints "
                              "weak: its 3D pose is a guess whatever its spread",
                "pose2d": "[F, J, 2] the model's input: screen-normalised x / w * 2 - [1, h / w]",
                "keypoints2d": "[F, J, 2] the input coordinates (pixels or normalised) in the model's joint order; "
                               "an undetected or off-image joint holds the stand-in position the model was given",
                "score": "[F, J] the detector's scores in the model's joint order (derived joints: min of sources)",
                "frame_index": "[F] the input frame of each row",
                "frame_id": "[F] the input's own frame ids (COCO image_id, a CSV frame column, an OpenPose file's "
                            "number), where it had them",
            },
            "skeleton": skel.name, "joint_names": list(skel.joints), "parents": list(skel.parents),
            "input": {
                "path": str(kp.path) if kp.kind == "array" else str(Path(kp.path).resolve()), "format": kp.kind,
                "layout": inp.layout, "layout_source": inp.layout_source,
                "frames": kp.num_frames, "frames_lifted": inp.frames, "frames_skipped_empty": int(len(plan.skipped)),
                "coordinates": "pixels" if plan.pixel else "normalized",
                "image_size": list(plan.image_size) if plan.image_size else None,
                "has_scores": kp.has_scores, "min_score": inp.min_score,
                "undetected_joints": plan.missing_joints, "off_image_joints": plan.off_image_joints,
                "mapping": mapping, "mapping_note": mapping_note,
            },
            "settings": {**self.settings, "fps": fps, "fps_source": fps_source},
            "checkpoint": {
                "path": str(self.weights_path.resolve()), "weights_sha256": self._sha256,
                **{k: self.config.get(k) for k in ("model", "diffusion", "skeleton", "dataset", "training",
                                                   "metrics", "calibration")},
            },
        }

    def lift_to_file(self, inp: LiftInput, path: Union[str, Path], progress: bool = False) -> "LiftSummary":
        """Lift an input into a file: .npz / .json streamed batch by batch through LiftWriter (memory
        bounded whatever the length; the file appears complete or not at all, also on Ctrl-C), a
        format of keypoints.writers.CLIP_WRITERS from the whole clip. The path must have passed
        check_output_path. Returns the sums a summary line needs."""
        from .keypoints import LiftWriter
        from .keypoints.writers import CLIP_WRITERS

        out = Path(path)
        self.check_output(out)
        self._say_fps(inp, bvh=out.suffix.lower() == ".bvh")
        t0 = time.perf_counter()
        clip_writer = CLIP_WRITERS.get(out.suffix.lower())
        if clip_writer is not None:  # a format written from the whole clip at once
            res = self.lift_input(inp, warn=False, _say_fps=False)
            clip_writer(res, out)
            bad = np.flatnonzero(res.unreliable)
            return LiftSummary(inp.frames, float(res.spread.sum()), int(res.weak.sum()), len(bad),
                               res.frame_index[bad[:8]].tolist(), [], time.perf_counter() - t0)
        writer = LiftWriter(out, frames=inp.frames, n_hyp=self.settings["hypotheses"], joint_names=self.joint_names,
                            meta=self.meta(inp), has_scores=inp.kp.has_scores, frame_ids=inp.kp.frame_ids)
        sm = LiftSummary(inp.frames, 0.0, 0, 0, [], writer.removed_stale, 0.0)
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=inp.frames, unit="frame", desc=f"lifting x{self.settings['hypotheses']}", leave=False,
                       disable=None if progress else True)
            for idx, c, r in self.iter_lift(inp):
                writer.write(pose3d=r["pose3d"], hypotheses=r["hypotheses"], spread=r["spread"], weak=c.weak,
                             unreliable=c.unreliable, pose2d=c.pose2d, keypoints2d=c.keypoints2d, frame_index=idx,
                             score=c.score)
                sm.spread_sum += float(r["spread"].sum())
                sm.weak_joints += int(c.weak.sum())
                sm.unreliable_frames += int(c.unreliable.sum())
                sm.unreliable_first += idx[c.unreliable][:8 - len(sm.unreliable_first)].tolist()
                bar.update(len(idx))
            bar.close()
            writer.close()
        except BaseException:
            writer.abort()
            raise
        sm.seconds = time.perf_counter() - t0
        return sm

    def lift_input(self, inp: LiftInput, warn: bool = True, _say_fps: bool = True) -> Lifted:
        """Lift an input `read_input` checked; the whole clip in memory (the CLI streams instead)."""
        fps_note = self._say_fps(inp) if _say_fps else None
        parts = {k: [] for k in ("pose3d", "hypotheses", "spread", "weak", "unreliable", "keypoints2d", "pose2d",
                                 "score", "frame_index")}
        for idx, c, r in self.iter_lift(inp):
            for k in ("pose3d", "hypotheses", "spread"):
                parts[k].append(r[k])
            parts["weak"].append(c.weak)
            parts["unreliable"].append(c.unreliable)
            parts["keypoints2d"].append(c.keypoints2d)
            parts["pose2d"].append(c.pose2d)
            parts["score"].append(c.score)
            parts["frame_index"].append(idx)
        arr = {k: (None if k == "score" and not inp.kp.has_scores else np.concatenate(v)) for k, v in parts.items()}
        ids = inp.kp.frame_ids
        out_warnings = list(inp.warnings)
        bad = np.flatnonzero(arr["unreliable"])
        if len(bad):
            out_warnings.append(unreliable_text(len(bad), inp.frames, arr["frame_index"][bad[:8]].tolist(), ids))
        if warn:
            for w in out_warnings:
                warnings.warn(w, stacklevel=3)
        meta = self.meta(inp)
        return Lifted(**arr, frame_ids=None if ids is None else np.asarray(ids)[arr["frame_index"]],
                      joint_names=self.joint_names, parents=tuple(self.skeleton.parents),
                      settings=dict(meta["settings"]), meta=meta,
                      notes=list(inp.notes) + ([fps_note] if fps_note else []),
                      warnings=out_warnings, _input_frame_ids=ids)


__all__ = ["DEFAULT_CHECKPOINT", "LiftError", "LiftInput", "Lifted", "PoseLifter", "load_lifter", "read_input"]
