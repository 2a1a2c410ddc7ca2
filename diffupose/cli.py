"""The `diffupose` command (also `python -m diffupose`).

  diffupose lift KEYPOINTS -o OUT.npz     2D keypoints of a video -> N 3D hypotheses per frame
  diffupose viz OUT.npz -o frame.png      the 2D input beside the 3D hypotheses (PNG, GIF, MP4)
  diffupose eval | import-mocap | demo    wired to diffupose.evaluate / diffupose.data.build_cmu

Every failure a user can cause (a bad file, a wrong option, a foreign checkpoint) ends with one
line on stderr, `diffupose <command>: error: ...`, and exit status 1 (2 for usage errors); no
traceback (DIFFUPOSE_DEBUG=1 shows it). Notes (skipped frames, fallbacks) go to stderr too, the
one-line summary of a result to stdout.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

PROG = "diffupose"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "checkpoints" / "cmu_gcn"
DTYPES = ("fp32", "bf16", "fp16")
IMAGE_FORMATS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")
CLIP_FORMATS = (".gif", ".mp4")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


# ---------------------------------------------------------------------------------------------
# argument types (argparse turns their ValueError/ArgumentTypeError into a usage error)
# ---------------------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return v


class _Formatter(argparse.HelpFormatter):
    """Wraps prose paragraphs but keeps indented lines (the examples) as written; shows an
    option's default where it has one."""

    def _fill_text(self, text, width, indent):
        import textwrap

        out = []
        for para in text.split("\n\n"):
            if any(line.startswith(" ") for line in para.splitlines()):
                out.append("\n".join(indent + line for line in para.splitlines()))
            else:
                out.append(textwrap.fill(" ".join(para.split()), width, initial_indent=indent,
                                         subsequent_indent=indent))
        return "\n\n".join(out)

    def _get_help_string(self, action):
        h = action.help or ""
        if action.option_strings and action.nargs != 0 and action.default is not None \
                and action.default is not False and action.default is not argparse.SUPPRESS and "default" not in h:
            h += " (default: %(default)s)"
        return h


# ---------------------------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------------------------
def _add_model_options(p: argparse.ArgumentParser, checkpoint_help: str) -> None:
    from .engine import AGGREGATES, SAMPLERS
    from .ops.backend import BACKENDS

    g = p.add_argument_group("model and sampling")
    g.add_argument("--checkpoint", metavar="PATH", default=None, help=checkpoint_help)
    g.add_argument("-n", "--hypotheses", type=_positive_int, default=10, metavar="N",
                   help="3D hypotheses drawn per frame")
    g.add_argument("--steps", type=_positive_int, default=None, metavar="K",
                   help="denoising steps of the DDIM sampler (default: 5; --sampler ddpm takes all T steps instead)")
    g.add_argument("--sampler", choices=SAMPLERS, default="ddim",
                   help="ddim: K deterministic steps; ddpm: the ancestral sampler over all T steps (slower)")
    g.add_argument("--flip", action="store_true",
                   help="test-time flip augmentation: average the denoiser with its left-right mirror")
    g.add_argument("--aggregate", choices=AGGREGATES, default="mean",
                   help="how the hypotheses are combined into one pose per frame (mean, or per-joint median)")
    g.add_argument("--seed", type=int, default=0, help="noise seed: the same seed and settings give the same output")
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default="auto",
                   help="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...")
    r.add_argument("--batch-size", type=_positive_int, default=None, metavar="FRAMES",
                   help="frames per denoiser call; memory grows with FRAMES x N (default: 1024 on CUDA, 256 on CPU)")
    r.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="kernels: auto picks the fastest that works here (cuda > triton > reference on a GPU, "
                        "cpu > reference on the CPU) and falls back to reference if a compiled kernel is missing")
    r.add_argument("--dtype", choices=DTYPES, default="fp32",
                   help="activation precision of the denoiser (the sampler state stays fp32)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description="DiffuPose: 2D human keypoints (from any detector) to several plausible 3D poses per frame, "
                    "with a diffusion model whose denoiser is a modulated graph convolutional network.",
        epilog="examples:\n"
               "  diffupose lift video_keypoints.json --image-size 1920 1080 -o poses.npz\n"
               "  diffupose viz poses.npz -o frame.png --frame 10\n"
               "  diffupose viz poses.npz -o clip.gif --stop 100\n"
               "\nRun `diffupose COMMAND --help` for a command's options.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    # -- lift -----------------------------------------------------------------------------------
    lift = sub.add_parser(
        "lift", formatter_class=_Formatter, help="lift 2D keypoints of a video to 3D hypotheses",
        description="Lift 2D keypoints (one person per frame) to N 3D pose hypotheses per frame, their aggregate "
                    "and the per-joint spread, in metres, root-relative (the pelvis at 0), in the camera frame "
                    "(x right, y down, z forward).\n\n"
                    "Inputs: COCO keypoint JSON (the COCO results format [{\"image_id\", "
                    "\"keypoints\": [x, y, s] * 17, \"score\"}, ...]: the highest-scoring person per image, "
                    "frames ordered by image_id; or a list of per-frame {\"keypoints\": ...}), .npy/.npz arrays "
                    "[frames, joints, 2 or 3] (3rd: detector score; .npy is memory-mapped), or CSV (one row per "
                    "frame, x,y[,score] per joint, optional "
                    "header). COCO keypoints are mapped to the Human3.6M skeleton approximately: pelvis = "
                    "mid-hips, thorax = mid-shoulders, spine = mid(pelvis, thorax), head = mid-eyes.\n\n"
                    "Output (.npz or .json by extension): pose3d [F, J, 3], hypotheses [F, N, J, 3], spread [F, J] "
                    "(metres), weak [F, J] (detector score below --min-score, or undetected), pose2d (the model's "
                    "normalised input), keypoints2d, frame_index (input frame of each row), joint_names, and meta "
                    "(settings, input, checkpoint).",
        epilog="examples:\n"
               "  # COCO results from a detector, pixels of a 1920 x 1080 video\n"
               "  diffupose lift keypoints.json --image-size 1920 1080 -o poses.npz\n"
               "  # a [frames, 17, 3] array in Human3.6M order, 20 hypotheses, flip augmentation, on the GPU\n"
               "  diffupose lift kp.npy --layout h36m17 --image-size 1000 1000 -n 20 --flip --device cuda \\\n"
               "      -o poses.npz\n"
               "  # already screen-normalised coordinates, frames without a person left out\n"
               "  diffupose lift kp.csv --layout coco17 --normalized --skip-empty -o poses.json")
    lift.add_argument("input", metavar="KEYPOINTS", help="2D keypoints: .json (COCO style), .npy, .npz or .csv")
    lift.add_argument("-o", "--output", required=True, metavar="OUT",
                      help="where to write the result: .npz (compact, any length) or .json")
    g = lift.add_argument_group("input")
    from .keypoints import LAYOUTS

    g.add_argument("--layout", choices=LAYOUTS, default=None,
                   help="joint order of the input: coco17 (COCO), h36m17 (Human3.6M/VideoPose3D), h36m16 "
                        "(Human3.6M without the nose), humaneva15. Default: coco17 for COCO JSON; for 17-joint "
                        "arrays the order the poses clearly show (else an error asks for it)")
    g.add_argument("--no-layout-check", action="store_true",
                   help="do not refuse a stated 17-joint --layout that the poses contradict")
    g.add_argument("--image-size", nargs=2, type=_positive_float, metavar=("W", "H"), default=None,
                   help="image width and height in pixels; pixel keypoints are normalised with it "
                        "(x / W * 2 - 1, y / W * 2 - H / W)")
    g.add_argument("--normalized", action="store_true",
                   help="the keypoints are already screen-normalised (x / W * 2 - 1, y / W * 2 - H / W)")
    g.add_argument("--min-score", type=_finite_float, default=0.3, metavar="S",
                   help="joints whose detector score is below S are flagged weak in the output (still lifted)")
    g.add_argument("--skip-empty", action="store_true",
                   help="leave out empty frames (all zeros or NaN: no person detected) instead of stopping")
    g.add_argument("--key", metavar="NAME", default=None,
                   help="the array to read from an .npz holding several (default: 'keypoints' or the only one)")
    _add_model_options(lift, "model checkpoint: <stem>.safetensors + <stem>.json, the stem, or a folder with "
                             "model.*; default: the shipped CMU-trained GCN (diffupose/assets/checkpoints/cmu_gcn)")
    lift.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no notes (errors still shown)")
    lift.set_defaults(func=cmd_lift)

    # -- viz ------------------------------------------------------------------------------------
    viz = sub.add_parser(
        "viz", formatter_class=_Formatter, help="draw the 2D input beside the 3D hypotheses (PNG, GIF, MP4)",
        description="Draw what `diffupose lift` wrote: the 2D keypoints (weak joints marked) beside the 3D "
                    "hypotheses (faint), their aggregate (bold) and the per-joint spread (joint colour). One frame "
                    "to an image (.png, .jpg, .pdf, .svg), or a clip to .gif (Pillow) or .mp4 (needs ffmpeg).",
        epilog="examples:\n"
               "  diffupose viz poses.npz -o frame.png --frame 42\n"
               "  diffupose viz poses.npz -o clip.gif --start 0 --stop 200 --step 2 --fps 12\n"
               "  diffupose viz poses.json -o clip.mp4 --max-hypotheses 5")
    viz.add_argument("lift_output", metavar="LIFTED", help="the .npz or .json written by `diffupose lift`")
    viz.add_argument("-o", "--output", required=True, metavar="OUT",
                     help="image (.png .jpg .pdf .svg: one frame) or clip (.gif, .mp4)")
    viz.add_argument("--frame", type=_nonneg_int, default=0, metavar="I",
                     help="row of the lift output to draw in an image (row i is input frame frame_index[i])")
    viz.add_argument("--start", type=_nonneg_int, default=0, metavar="I", help="first row of a clip")
    viz.add_argument("--stop", type=_nonneg_int, default=None, metavar="I", help="row after the last of a clip "
                                                                                    "(default: the end)")
    viz.add_argument("--step", type=_positive_int, default=1, metavar="K", help="draw every K-th row in a clip")
    viz.add_argument("--fps", type=_positive_float, default=25.0, help="frames per second of a clip")
    viz.add_argument("--max-hypotheses", type=_nonneg_int, default=20, metavar="K",
                     help="draw at most K of the hypotheses (0: the aggregate only)")
    viz.add_argument("--elev", type=_finite_float, default=12.0, help="3D view elevation (degrees)")
    viz.add_argument("--azim", type=_finite_float, default=-70.0, help="3D view azimuth (degrees)")
    viz.add_argument("--dpi", type=_positive_int, default=100, help="resolution of the output")
    viz.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    viz.set_defaults(func=cmd_viz)

    # -- the commands the evaluation and data modules provide -----------------------------------
    ev = sub.add_parser(
        "eval", formatter_class=_Formatter, help="evaluate a checkpoint (MPJPE, P-MPJPE per action)",
        description="Evaluate a checkpoint on a 3D dataset: MPJPE and P-MPJPE of the aggregate (and of the best "
                    "hypothesis, reported as an oracle bound), per action and overall.",
        epilog="examples:\n"
               "  diffupose eval --dataset cmu\n"
               "  diffupose eval --dataset h36m --data-dir ~/data/h36m --checkpoint runs/h36m/model -n 10 --flip")
    ev.add_argument("--dataset", default="cmu", help="cmu (the embedded set), h36m or humaneva (bring your own files)")
    ev.add_argument("--data-dir", metavar="DIR", default=None,
                    help="folder with the dataset's files (VideoPose3D layout: data_3d_*.npz, data_2d_*.npz)")
    ev.add_argument("--keypoints", default=None,
                    help="2D input for h36m/humaneva: gt or a detector's name (e.g. cpn_ft_h36m_dbb)")
    ev.add_argument("-o", "--output", metavar="OUT", default=None, help="write the results table here (.json or .md)")
    _add_model_options(ev, "checkpoint to evaluate (default: the shipped CMU-trained GCN)")
    ev.set_defaults(func=_provided("diffupose.evaluate", "main_eval", "eval"))

    im = sub.add_parser(
        "import-mocap", formatter_class=_Formatter, help="convert motion capture (ASF/AMC, BVH) to a training set",
        description="Convert motion-capture files (CMU ASF/AMC or BVH, or folders of them) to the 17 Human3.6M "
                    "joints and their 2D projections from a rig of four virtual cameras per subject, in the "
                    "VideoPose3D layout: data_3d_NAME.npz, data_2d_NAME_gt.npz (exact 2D), data_2d_NAME_det.npz "
                    "(detector-like 2D) and cameras_NAME.json in OUT_DIR, ready for training.",
        epilog="examples:\n"
               "  diffupose import-mocap ~/cmu/asfamc -o data/ --name cmu\n"
               "  diffupose import-mocap walk.bvh run.bvh -o data/ --name mine --fps 25 --subject S1")
    im.add_argument("inputs", nargs="+", metavar="PATH", help="ASF/AMC or BVH files, or folders holding them")
    im.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder to write the dataset files in")
    im.add_argument("--name", required=True, help="dataset name in the file names (letters, digits, _ and -)")
    im.add_argument("--fps", type=_positive_float, default=20.0,
                    help="frame rate kept (every round(source / fps)-th frame)")
    im.add_argument("--amc-fps", type=_positive_float, default=120.0, help="frame rate of AMC files (they do not say)")
    im.add_argument("--subject", default=None,
                    help="subject name for non-CMU file names (default: CMU names give SNN, others the folder name)")
    im.add_argument("--asf", default=None, metavar="FILE",
                    help="the ASF skeleton of AMC files (default: found beside them)")
    im.add_argument("--bvh-scale", type=_positive_float, default=None, metavar="S",
                    help="metres per BVH unit (default: guessed from the skeleton's height)")
    im.add_argument("--seed", type=int, default=0, help="seed of the camera placement jitter and the 2D noise")
    im.add_argument("--no-detections", action="store_true", help="write no detector-like 2D set")
    im.set_defaults(func=_provided("diffupose.data.build_cmu", "import_mocap", "import-mocap", call=_call_import_mocap))
    demo = sub.add_parser(
        "demo", formatter_class=_Formatter, help="the main job on the embedded data: lift, evaluate, draw",
        description="Run the whole path on the embedded demo data: lift its 2D poses, report MPJPE and "
                    "throughput, and draw a few frames.",
        epilog="examples:\n  diffupose demo\n  diffupose demo --device cuda -o out/demo")
    demo.add_argument("-o", "--output", metavar="DIR", default=None, help="folder for the demo's results and figures")
    _add_model_options(demo, "checkpoint to run (default: the shipped CMU-trained GCN)")
    demo.set_defaults(func=_provided("diffupose.evaluate", "main_demo", "demo"))
    return parser


def _call_import_mocap(fn, args) -> int:
    kw = dict(fps=args.fps, amc_fps=args.amc_fps, subject=args.subject, asf=args.asf, bvh_scale=args.bvh_scale,
              seed=args.seed, detections=not args.no_detections,
              log=lambda *a: print(*a, file=sys.stderr))
    try:
        summary = fn(args.inputs, args.output, args.name, **kw)
    except (ValueError, FileNotFoundError) as e:  # MocapFormatError is a ValueError naming file:line
        raise CliError(str(e)) from None
    paths = (summary or {}).get("paths", {})
    print(f"wrote {', '.join(Path(p).name for p in paths.values()) or 'the dataset'} to {args.output}")
    return 0


def _provided(module: str, func: str, command: str, call=None):
    """A command implemented elsewhere: call module.func(args) (or call(func, args)) if it exists,
    else say so (exit 2)."""

    def run(args) -> int:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is not None and module.startswith(e.name):
                print(f"{PROG} {command}: not available yet in this version ({module} is not part of it)",
                      file=sys.stderr)
                return 2
            raise
        fn = getattr(mod, func, None)
        if fn is None:
            print(f"{PROG} {command}: not available yet in this version ({module}.{func} is missing)", file=sys.stderr)
            return 2
        rc = call(fn, args) if call is not None else fn(args)
        return int(rc or 0)

    return run


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------
class _Reporter:
    def __init__(self, command: str, quiet: bool = False):
        self.command, self.quiet = command, quiet

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"{PROG} {self.command}: note: {text}", file=sys.stderr)


def _device(spec: str):
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise CliError(f"--device {spec!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise CliError(f"--device {spec}: no CUDA device is available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CliError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise CliError(f"--device {spec}: only cpu and cuda are supported")
    return dev


def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def load_model(checkpoint: Optional[str], device):
    """(model, diffusion, config, the checkpoint's weights path); CliError for anything unusable."""
    from .checkpoint import CheckpointError, checkpoint_paths, load_checkpoint

    path = Path(checkpoint).expanduser() if checkpoint else DEFAULT_CHECKPOINT
    wpath, cpath = checkpoint_paths(path)
    if checkpoint is None and not (wpath.exists() or cpath.exists()):
        raise CliError(f"the shipped checkpoint is missing ({wpath} and {cpath.name} not found): this install has no "
                       "trained model yet; pass --checkpoint STEM, the stem of a <stem>.safetensors + <stem>.json "
                       "pair written by diffupose training")
    if checkpoint is not None and not (wpath.exists() or cpath.exists()):
        raise CliError(f"checkpoint not found: {path} (expected {wpath.name} and {cpath.name} there)")
    try:
        model, diffusion, config = load_checkpoint(path, device)
    except CheckpointError as e:
        raise CliError(f"unusable checkpoint: {e}") from None
    if model.cfg.arch == "regressor":
        raise CliError(f"{cpath} is a deterministic regressor (arch 'regressor'), not a diffusion denoiser; "
                       "lifting needs a gcn, mlp or unet checkpoint")
    return model, diffusion, config, wpath


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pick_backend(requested: str, model, diffusion, device, dtype, report: _Reporter) -> str:
    """The backend to lift with. An explicit one must work; 'auto' tries the candidates for the
    device in order with a one-frame lift and falls back past any that fails (a compiled op not
    built for this device, say), naming the reason."""
    import torch

    from .engine import Lifter
    from .ops import backend as B

    probe = torch.zeros(1, model.skeleton.num_joints, 2)

    def runs(name: str) -> None:
        Lifter(model, diffusion, n_hyp=1, steps=1, backend=name, dtype=dtype, cuda_graph=False, device=device)(probe)

    if requested != "auto":
        try:
            B.resolve(requested, device)
            runs(requested)
        except (B.BackendUnavailable, ValueError) as e:
            raise CliError(f"--backend {requested}: {e}") from None
        except Exception as e:  # a compiled op that is not built for this device, say
            raise CliError(f"--backend {requested} does not run here ({_first_line(e)}); "
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
            report.note(f"backend {name!r} does not run here ({_first_line(e)}); trying the next")
    return "reference"


def _first_line(e: BaseException) -> str:
    """The gist of an exception: its first sentence of its first line, bounded."""
    lines = str(e).strip().splitlines()
    text = lines[0].split(". ")[0] if lines else type(e).__name__
    return text[:160]


# ---------------------------------------------------------------------------------------------
# lift
# ---------------------------------------------------------------------------------------------
def cmd_lift(args) -> int:
    import numpy as np
    import torch

    from . import __version__
    from .engine import Lifter
    from .keypoints import (COCO_TO_H36M17, LiftWriter, check_conversion, check_keypoints, check_output_path,
                            iter_chunks, prepare_chunk, read_keypoints, resolve_layout)

    report = _Reporter("lift", args.quiet)
    out = check_output_path(args.output, inputs=[args.input])
    kp = read_keypoints(args.input, key=args.key)
    for n in kp.notes:
        report.note(n)
    plan = check_keypoints(kp, image_size=tuple(args.image_size) if args.image_size else None,
                           normalized=args.normalized, skip_empty=args.skip_empty)
    layout, layout_note = resolve_layout(kp, args.layout, plan.frames, plan.pixel, check=not args.no_layout_check)
    if layout_note:
        report.note(layout_note)
    for n in plan.notes:
        report.note(n)

    device = _device(args.device)
    dtype = _torch_dtype(args.dtype)
    model, diffusion, config, wpath = load_model(args.checkpoint, device)
    skel = model.skeleton
    check_conversion(layout, skel.name)
    if args.steps is not None and args.sampler == "ddpm":
        report.note(f"--steps is ignored by --sampler ddpm (it takes all {diffusion.cfg.T} steps)")
    steps = args.steps or 5
    backend = pick_backend(args.backend, model, diffusion, device, dtype, report)
    batch = args.batch_size or (1024 if device.type == "cuda" else 256)
    lifter = Lifter(model, diffusion, n_hyp=args.hypotheses, steps=steps, sampler=args.sampler,
                    flip=args.flip, aggregate=args.aggregate, batch_frames=batch, dtype=dtype, seed=args.seed,
                    backend=backend, device=device)
    root = skel.parents.index(-1)
    F = len(plan.frames)
    mapping = None
    if layout != skel.name:
        mapping = {name: list(COCO_TO_H36M17[name]) for name in skel.joints} if layout == "coco17" \
            else f"{layout} -> {skel.name}: joints selected by name"
    meta = {
        "format": "diffupose-lift", "diffupose_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "units": "metres",
        "frame": "camera frame of the training data (x right, y down, z forward); root-relative: each hypothesis "
                 f"is translated so that its root joint ({skel.joints[root]}) is at 0",
        "arrays": {
            "pose3d": "[F, J, 3] the aggregate of the hypotheses",
            "hypotheses": "[F, N, J, 3]",
            "spread": "[F, J] RMS distance of the hypotheses from their mean, per joint",
            "weak": f"[F, J] detector score below min_score ({args.min_score}) or undetected (2D at pixel 0,0); "
                    "lifted anyway, treat with care",
            "pose2d": "[F, J, 2] the model's input: screen-normalised x / w * 2 - [1, h / w]",
            "keypoints2d": "[F, J, 2] the input coordinates (pixels or normalised) in the model's joint order",
            "score": "[F, J] the detector's scores in the model's joint order (derived joints: min of sources)",
            "frame_index": "[F] the input frame of each row",
            "frame_id": "[F] the input's own frame ids (COCO image_id, a CSV frame column), where it had them",
        },
        "skeleton": skel.name, "joint_names": list(skel.joints), "parents": list(skel.parents),
        "input": {
            "path": str(Path(args.input).resolve()), "format": kp.kind, "layout": layout,
            "layout_source": "stated" if args.layout else ("file" if kp.layout else "inferred from the poses"),
            "frames": kp.num_frames, "frames_lifted": F, "frames_skipped_empty": int(len(plan.skipped)),
            "coordinates": "pixels" if plan.pixel else "normalized",
            "image_size": list(plan.image_size) if plan.image_size else None,
            "has_scores": kp.has_scores, "min_score": args.min_score,
            "undetected_joints": plan.missing_joints,
            "mapping": mapping,
            "mapping_note": ("approximate: COCO has no pelvis, spine, thorax or head top; pelvis = mid-hips, thorax = "
                             "mid-shoulders, spine = mid(pelvis, thorax), head = mid-eyes; derived scores = min of "
                             "the sources") if layout == "coco17" else None,
        },
        "settings": {
            "hypotheses": args.hypotheses, "steps": steps if args.sampler == "ddim" else diffusion.cfg.T,
            "sampler": args.sampler, "flip": args.flip, "aggregate": args.aggregate, "seed": args.seed,
            "batch_size": batch, "device": str(device), "backend": backend, "backend_requested": args.backend,
            "dtype": args.dtype, "cuda_graph": lifter.use_graph,
        },
        "checkpoint": {
            "path": str(wpath.resolve()), "weights_sha256": _sha256(wpath),
            **{k: config.get(k) for k in ("model", "diffusion", "skeleton", "dataset", "training", "metrics")},
        },
    }

    writer = LiftWriter(out, frames=F, n_hyp=args.hypotheses, joint_names=skel.joints, meta=meta,
                        has_scores=kp.has_scores, frame_ids=kp.frame_ids)
    spread_sum, weak_count = 0.0, 0
    t0 = time.perf_counter()
    try:
        chunks = list(iter_chunks(F, batch))
        from tqdm.auto import tqdm

        bar = tqdm(total=F, unit="frame", desc=f"lifting x{args.hypotheses}", leave=False,
                   disable=True if args.quiet else None)
        for s, e in chunks:
            idx = plan.frames[s:e]
            pose2d, kp2d, weak, score = prepare_chunk(kp, idx, plan, layout, skel.name, args.min_score)
            r = lifter(torch.from_numpy(pose2d))
            hyp = r.hypotheses.float().cpu()
            if not torch.isfinite(hyp).all():
                raise CliError("the model produced NaN or infinite poses"
                               + (f" in {args.dtype}; try --dtype fp32" if args.dtype != "fp32" else
                                  "; the checkpoint may be broken"))
            agg, spread = r.mean.float().cpu(), r.spread.float().cpu()  # root-relative, median if asked
            writer.write(pose3d=agg.numpy(), hypotheses=hyp.numpy(), spread=spread.numpy(), weak=weak,
                         pose2d=pose2d, keypoints2d=kp2d, frame_index=idx, score=score)
            spread_sum += float(spread.sum())
            weak_count += int(weak.sum())
            bar.update(e - s)
        bar.close()
        writer.close()
    except BaseException:
        writer.abort()
        raise
    dt = time.perf_counter() - t0
    J = skel.num_joints
    print(f"lifted {F} frames x {args.hypotheses} hypotheses in {dt:.1f} s ({F / max(dt, 1e-9):.0f} frames/s, "
          f"{backend} on {device}): mean per-joint spread {100 * spread_sum / (F * J):.1f} cm, "
          f"{weak_count} weak joints -> {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# viz
# ---------------------------------------------------------------------------------------------
def cmd_viz(args) -> int:
    from . import viz
    from .keypoints import check_output_path, read_lift_output

    out = check_output_path(args.output, inputs=[args.lift_output], formats=IMAGE_FORMATS + CLIP_FORMATS)
    res = read_lift_output(args.lift_output)
    F = res.pose3d.shape[0]
    ext = out.suffix.lower()
    if ext in IMAGE_FORMATS:
        if args.frame >= F:
            raise CliError(f"--frame {args.frame}: the lift output has {F} rows (0 to {F - 1})")
        viz.save_frame(res, args.frame, out, max_hyp=args.max_hypotheses, elev=args.elev, azim=args.azim,
                       dpi=args.dpi)
        print(f"row {args.frame} (input frame {int(res.frame_index[args.frame])}) -> {out}")
        return 0
    stop = F if args.stop is None else min(args.stop, F)
    rows = list(range(args.start, stop, args.step))
    if not rows:
        raise CliError(f"no rows to draw: --start {args.start} --stop {stop} --step {args.step} of {F} rows")
    if ext == ".mp4" and not viz.ffmpeg_available():
        raise CliError("writing .mp4 needs ffmpeg, which is not on PATH; write a .gif instead (-o clip.gif) "
                       "or install ffmpeg")
    if ext == ".gif" and len(rows) > viz.MAX_GIF_FRAMES:
        raise CliError(f"a GIF of {len(rows)} frames is held in memory while written; keep it under "
                       f"{viz.MAX_GIF_FRAMES} with --start/--stop/--step, or write .mp4 (ffmpeg)")
    viz.save_clip(res, rows, out, fps=args.fps, max_hyp=args.max_hypotheses, elev=args.elev, azim=args.azim,
                  dpi=args.dpi, progress=not args.quiet)
    print(f"{len(rows)} frames -> {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failed, 2 usage or not available)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    where = f"{PROG} {args.command}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure becomes one line; DIFFUPOSE_DEBUG=1 re-raises
        if os.environ.get("DIFFUPOSE_DEBUG", "").strip() not in ("", "0"):
            raise
        print(f"{where}: error: {_describe(e, args)}", file=sys.stderr)
        return 1


def _describe(e: Exception, args) -> str:
    """One line for any exception: ours carry their message; the rest say what kind they are."""
    from .checkpoint import CheckpointError
    from .keypoints import KeypointError

    try:
        import torch

        oom = (torch.cuda.OutOfMemoryError,)
    except Exception:  # noqa: BLE001
        oom = ()
    if isinstance(e, oom) or isinstance(e, MemoryError):
        return (f"out of memory with --batch-size {getattr(args, 'batch_size', None) or 'default'} x "
                f"{getattr(args, 'hypotheses', '?')} hypotheses; lower --batch-size")
    if isinstance(e, (CliError, KeypointError, CheckpointError)):
        text = str(e)
    elif isinstance(e, OSError):
        text = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    else:
        text = f"unexpected {type(e).__name__}: {e} (DIFFUPOSE_DEBUG=1 shows the traceback; please report it)"
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
