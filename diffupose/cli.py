"""The `diffupose` command (also `python -m diffupose`).

  diffupose lift KEYPOINTS -o OUT.npz     2D keypoints of a video -> N 3D hypotheses per frame
  diffupose viz OUT.npz -o frame.png      the 2D input beside the 3D hypotheses (PNG, GIF, MP4)
  diffupose eval                          MPJPE / P-MPJPE per action of a checkpoint on a test set
  diffupose demo -o demo.png              the main job on the embedded CMU data: lift, score, draw
  diffupose import-mocap ASF/AMC|BVH -o D motion capture -> a training set (VideoPose3D layout)

Every failure a user can cause (a bad file, a wrong option, a foreign checkpoint) ends with one
line on stderr, `diffupose <command>: error: ...`, and exit status 1 (2 for usage errors); no
traceback (DIFFUPOSE_DEBUG=1 shows it). Ctrl-C ends with one line and status 130, SIGTERM with one
line and 143, an earlier output left intact either way. Notes (skipped frames, fallbacks) go to
stderr too, as do warnings (unreliable frames: shown even with -q); the one-line summary of a
result to stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

PROG = "diffupose"
DEMO_CPU_FRAMES = 2000  # the demo's default subsample on a CPU: under a minute on 2 cores (N = 1 and N = 10, flip)
IMAGE_FORMATS = (".png", ".jpg", ".jpeg", ".pdf", ".svg")
CLIP_FORMATS = (".gif", ".mp4")


from .api import DEFAULT_CHECKPOINT, DTYPES, TRAIN_HINT, LiftError  # noqa: E402,F401

# A user-facing failure: printed as one line, exit status 1. The API's own (a device, a checkpoint,
# a backend) are the same class, so its messages and the command's are reported alike.
CliError = LiftError


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


def _nonneg_float(text: str) -> float:
    v = _finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
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
def _add_model_options(p: argparse.ArgumentParser, checkpoint_help: str, *, several_n: bool = False,
                       flip_default: bool = False, batch_default: str = "1024 on CUDA, 256 on CPU") -> None:
    """The options every lifting command shares. several_n: -n takes a list (one table row each);
    flip_default: flip augmentation on unless --no-flip (the paper's evaluation protocol);
    batch_default: what --batch-size defaults to, in words."""
    from .engine import AGGREGATES, SAMPLERS
    from .ops.backend import BACKENDS

    g = p.add_argument_group("model and sampling")
    g.add_argument("--checkpoint", metavar="PATH", default=None, help=checkpoint_help)
    if several_n:
        g.add_argument("-n", "--hypotheses", type=_positive_int, nargs="+", default=[1, 10], metavar="N",
                       help="3D hypotheses drawn per frame: one table row per value")
    else:
        g.add_argument("-n", "--hypotheses", type=_positive_int, default=10, metavar="N",
                       help="3D hypotheses drawn per frame")
    g.add_argument("--steps", type=_positive_int, default=None, metavar="K",
                   help="denoising steps of the DDIM sampler (default: 5; --sampler ddpm takes all T steps instead)")
    g.add_argument("--sampler", choices=SAMPLERS, default="ddim",
                   help="ddim: K deterministic steps; ddpm: the ancestral sampler over all T steps (slower)")
    if flip_default:
        g.add_argument("--flip", dest="flip", action="store_true", default=True,
                       help="test-time flip augmentation: average the denoiser with its left-right mirror "
                            "(on by default here, as in the paper's tables)")
        g.add_argument("--no-flip", dest="flip", action="store_false", help="no test-time flip augmentation")
    else:
        g.add_argument("--flip", action="store_true",
                       help="test-time flip augmentation: average the denoiser with its left-right mirror")
    g.add_argument("--aggregate", choices=AGGREGATES, default="mean",
                   help="how the hypotheses are combined into one pose per frame (mean, or per-joint median)")
    g.add_argument("--seed", type=int, default=0, help="noise seed: the same seed and settings give the same output")
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default="auto",
                   help="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...")
    r.add_argument("--batch-size", type=_positive_int, default=None, metavar="FRAMES",
                   help=f"frames per denoiser call; memory grows with FRAMES x N (default: {batch_default})")
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
                    "\"keypoints\": [x, y, s] * 17, \"score\"}, ...]: frames ordered by image_id; or a list of "
                    "per-frame {\"keypoints\": ...}; 133 keypoints: COCO-WholeBody), an OpenPose --write_json folder "
                    "of per-frame *_keypoints.json (BODY_25), MediaPipe Pose landmarks (JSON, or CSV with "
                    "nose_x, nose_y, ... columns; x, y fractions of the image), .npy/.npz arrays "
                    "[frames, joints, 2 or 3] (3rd: detector score; .npy is memory-mapped), or CSV (one row per "
                    "frame, x,y[,score] per joint, optional header). Several people per frame: --person. "
                    "Keypoints are mapped to the Human3.6M skeleton through COCO's 17 joints, approximately: "
                    "pelvis = mid-hips, thorax = mid-shoulders, spine = mid(pelvis, thorax), head = mid-eyes "
                    "(diffupose/keypoints/layouts.py).\n\n"
                    "Output (.npz or .json by extension): pose3d [F, J, 3], hypotheses [F, N, J, 3], spread [F, J] "
                    "(metres), weak [F, J] (detector score below --min-score; or undetected or more than one image "
                    "size off the image, and then lifted from a stand-in position, its nearest usable joints), "
                    "unreliable [F] (a frame with an undetected or off-image joint, or with more than half its "
                    "joints weak: its pose is a guess), pose2d (the model's "
                    "normalised input), keypoints2d, frame_index (input frame of each row), joint_names, and meta "
                    "(settings, input, checkpoint). A .bvh or .csv output holds the aggregate pose only: a BVH "
                    "skeleton (median bone lengths, rotations solved from the positions) or one column per "
                    "joint coordinate (pelvis_x, pelvis_y, ...).",
        epilog="examples:\n"
               "  # COCO results from a detector, pixels of a 1920 x 1080 video\n"
               "  diffupose lift keypoints.json --image-size 1920 1080 -o poses.npz\n"
               "  # a [frames, 17, 3] array in Human3.6M order, 20 hypotheses, flip augmentation, on the GPU\n"
               "  diffupose lift kp.npy --layout h36m17 --image-size 1000 1000 -n 20 --flip --device cuda \\\n"
               "      -o poses.npz\n"
               "  # already screen-normalised coordinates, frames without a person left out\n"
               "  diffupose lift kp.csv --layout coco17 --normalized --skip-empty -o poses.json\n"
               "  # a 30 frames/s video, smoothed, to an animation tool\n"
               "  diffupose lift keypoints.json --image-size 1920 1080 --smooth oneeuro --fps 30 -o poses.bvh")
    lift.add_argument("input", metavar="KEYPOINTS",
                      help="2D keypoints: .json (COCO, COCO-WholeBody, OpenPose or MediaPipe), a folder of OpenPose "
                           "*_keypoints.json, .npy, .npz or .csv (MediaPipe's named columns too)")
    lift.add_argument("-o", "--output", required=True, metavar="OUT",
                      help="where to write the result: .npz (compact, any length) or .json (everything); .bvh "
                           "(a skeleton of the clip's median bone lengths and its joint rotations, for animation "
                           "tools) or .csv (frame, pelvis_x, pelvis_y, ..., unreliable): the aggregate pose only")
    g = lift.add_argument_group("input")
    from .keypoints import LAYOUTS, PERSON_HELP

    g.add_argument("--layout", choices=LAYOUTS, default=None,
                   help="joint order of the input: coco17 (COCO), h36m17 (Human3.6M/VideoPose3D), h36m16 "
                        "(Human3.6M without the nose), humaneva15, body25 (OpenPose), mediapipe33 (MediaPipe Pose; "
                        "x, y fractions of the image, turned into pixels with --image-size), coco_wholebody (133 "
                        "points, the first 17 COCO's). Default: the file's (COCO JSON, OpenPose, MediaPipe), the "
                        "only layout of that many joints, or for 17-joint arrays the order the poses clearly show "
                        "(else an error asks for it)")
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
                   help="leave out empty frames (all zeros or NaN: no person detected) and frames with no usable "
                        "joint (every joint undetected or more than one image size off the image) instead of "
                        "stopping")
    g.add_argument("--person", metavar="WHO", default="auto", help=PERSON_HELP)
    g.add_argument("--key", metavar="NAME", default=None,
                   help="the array to read from an .npz holding several (default: 'keypoints' or the only one)")
    from .smoothing import DEFAULT_BETA, DEFAULT_MIN_CUTOFF, SMOOTHERS

    v = lift.add_argument_group("video")
    v.add_argument("--smooth", choices=SMOOTHERS, default="none",
                   help="temporal filter on the aggregate pose of a video, per joint (oneeuro: the One Euro filter, "
                        "causal, little lag in fast motion); never for unrelated images. The hypotheses and the "
                        "spread are left as lifted")
    v.add_argument("--fps", type=_positive_float, default=None,
                   help="frame rate of the video, for --smooth and the BVH frame time (default: the input's, where "
                        "it states one, else 30)")
    v.add_argument("--smooth-min-cutoff", type=_positive_float, default=DEFAULT_MIN_CUTOFF, metavar="HZ",
                   help="One Euro: the cut-off at rest (lower: smoother, more lag)")
    v.add_argument("--smooth-beta", type=_nonneg_float, default=DEFAULT_BETA, metavar="B",
                   help="One Euro: how fast the cut-off rises with a joint's speed, Hz per m/s (higher: less lag)")
    _add_model_options(lift, "model checkpoint: <stem>.safetensors + <stem>.json, the stem, or a folder with "
                             "model.*; default: the shipped GCN trained on the CMU and HDM05 sets (diffupose/assets/checkpoints/"
                             "cmu_hdm05_gcn, CC BY-SA 3.0; cmu_gcn beside it: CMU only; cmu_hdm05_mlp: an MLP denoiser, more accurate on that data, no fused kernels)")
    lift.add_argument("-q", "--quiet", action="store_true",
                      help="no progress bar and no notes (errors and warnings still shown)")
    lift.set_defaults(func=cmd_lift)

    # -- viz ------------------------------------------------------------------------------------
    viz = sub.add_parser(
        "viz", formatter_class=_Formatter, help="draw the 2D input beside the 3D hypotheses (PNG, GIF, MP4)",
        description="Draw what `diffupose lift` wrote: the 2D keypoints (weak joints marked) beside the 3D "
                    "hypotheses (faint), their aggregate (bold) and the per-joint spread (joint colour). One frame "
                    "to an image (.png, .jpg, .pdf, .svg), or a clip to .gif (Pillow) or .mp4 (ffmpeg: on PATH, or the "
                    "imageio-ffmpeg package's: pip install imageio-ffmpeg).",
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

    # -- eval -----------------------------------------------------------------------------------
    from .data.dataset import DATASETS

    ev = sub.add_parser(
        "eval", formatter_class=_Formatter, help="evaluate a checkpoint (MPJPE, P-MPJPE per action)",
        description="Evaluate a checkpoint on a dataset's test split: MPJPE (protocol #1) and P-MPJPE (protocol "
                    "#2, after a similarity alignment) per action and their mean over actions, in Table I's layout, "
                    "one row per number of hypotheses N. The prediction is the aggregate (mean, or per-joint "
                    "median) of the N hypotheses, lifted from the 2D alone; the 3D ground truth is read only to "
                    "score it.\n\n"
                    "--oracle adds the best of the N hypotheses per frame, chosen with the ground truth: a bound on "
                    "what the hypotheses contain, not a prediction, and reported only as such.",
        epilog="examples:\n"
               "  # the embedded CMU test set, the shipped checkpoint, N = 1 and N = 10\n"
               "  diffupose eval\n"
               "  diffupose eval --checkpoint runs/cmu/model --keypoints det -n 1 5 10 --json cmu.json\n"
               "  # Human3.6M (your own files, VideoPose3D layout), CPN detections, on the GPU\n"
               "  diffupose eval --dataset h36m --data-dir ~/data/h36m --keypoints cpn_ft_h36m_dbb \\\n"
               "      --checkpoint runs/h36m/model --device cuda --oracle")
    d = ev.add_argument_group("data")
    d.add_argument("--dataset", choices=DATASETS, default="cmu",
                   help="cmu (the embedded set, test split: an unseen subject and unseen takes), hdm05 (embedded: two "
                        "unseen people and unseen takes), cmu+hdm05 (both test splits), h36m or humaneva (bring your "
                        "own files)")
    d.add_argument("--data-dir", metavar="DIR", default=None,
                   help="folder with the dataset's files in the VideoPose3D layout (data_3d_*.npz, data_2d_*.npz); "
                        "required for h36m and humaneva, optional for cmu (default: the embedded copy)")
    d.add_argument("--keypoints", default=None, metavar="SET",
                   help="2D input: gt (projected ground truth), a detector's set (cmu: det; h36m: e.g. "
                        "cpn_ft_h36m_dbb) or a path to a 2D .npz. Default: the set the checkpoint was trained on "
                        "where it records one for this dataset, else gt")
    d.add_argument("--cameras", metavar="FILE", default=None,
                   help="cameras JSON in the h36m_cameras.json form (required for humaneva)")
    d.add_argument("--max-frames", type=_nonneg_int, default=0, metavar="F",
                   help="evaluate at most F test frames, spread evenly over the split (0: all)")
    o = ev.add_argument_group("output")
    o.add_argument("--oracle", action="store_true",
                   help="also report the oracle best-of-N errors (the hypothesis nearest the ground truth per frame; "
                        "uses ground truth, so it is a bound, not a prediction)")
    o.add_argument("--json", metavar="FILE", default=None,
                   help="write the summary, the per-action numbers and the settings to this JSON file")
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no notes (errors still shown)")
    _add_model_options(ev, "checkpoint to evaluate: <stem>.safetensors + <stem>.json, the stem, or a folder with "
                           "model.* (default: the shipped GCN, cmu_hdm05_gcn)", several_n=True, flip_default=True,
                       batch_default="4096 on CUDA, about 4096 / N on CPU")
    ev.set_defaults(func=cmd_eval)

    # -- calibrate ------------------------------------------------------------------------------
    cal = sub.add_parser(
        "calibrate", formatter_class=_Formatter, help="fit the spread's calibration on the validation rows",
        description="Fit the per-joint scale of a checkpoint's spread on the validation part of its training data "
                    "(the rows `--val-fraction` or `--val-subjects` held out in training; the checkpoint records which) and "
                    "write it into "
                    "the checkpoint's JSON. With two held-out people or more it is fitted at the level at which a "
                    "scale fitted on one of them covers --coverage of another's errors, so that it holds on a new "
                    "person. Every lift with it then records the calibration: factor x scale_j x "
                    "spread is the distance within which --coverage of a joint's validation errors fell (Lifted."
                    "radius in Python). The weights are not touched.",
        epilog="examples:\n  # train with a validation part held out, then calibrate on it\n"
               "  python train/h36m.py --dataset cmu+hdm05 --keypoints det --val-fraction 0.05 --out runs/mocap\n"
               "  diffupose calibrate --checkpoint runs/mocap/model -n 10\n"
               "  # the same, corrected for new people by two models of a shorter recipe (docs/RESULTS.md)\n"
               "  diffupose calibrate --checkpoint runs/mocap/model --person-correction runs/clips/model runs/people/model")
    cal.add_argument("--checkpoint", metavar="PATH", required=True, help="checkpoint to calibrate (it is rewritten)")
    cal.add_argument("-n", "--hypotheses", type=_positive_int, default=10, metavar="N",
                     help="hypotheses per frame of the lifts the calibration is for")
    cal.add_argument("--steps", type=_positive_int, default=5, metavar="K", help="DDIM steps")
    cal.add_argument("--coverage", type=float, default=0.9, help="share of validation errors within the radius")
    cal.add_argument("--max-frames", type=_nonneg_int, default=4000, metavar="F",
                     help="validation rows used, spread evenly (0: all)")
    cal.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, ...")
    cal.add_argument("--person-correction", nargs=2, metavar=("CLIPS", "PEOPLE"), default=None,
                     help="multiply the scale by how much larger it came out fitted on held-out people (PEOPLE, "
                          "calibrated by person) than on held-out clips (CLIPS), two checkpoints of one recipe")
    cal.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    cal.set_defaults(func=cmd_calibrate)

    # -- import-mocap ---------------------------------------------------------------------------
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
    im.set_defaults(func=cmd_import_mocap)

    # -- demo -----------------------------------------------------------------------------------
    demo = sub.add_parser(
        "demo", formatter_class=_Formatter, help="the main job on the embedded data: lift, score, draw",
        description="The whole path on the embedded CMU data: load the shipped checkpoint, lift the 2D poses of "
                    "the test clips (a person never seen in training, and unseen takes of the others), print "
                    "MPJPE and P-MPJPE for N = 1 and N hypotheses beside the mean-pose baseline (the training "
                    "set's mean pose predicted for every frame), the wall time and frames per second, and write "
                    "a figure: per-action MPJPE bars and one example frame (the 2D input beside the aggregate "
                    "and a few hypotheses in 3D, the ground truth dashed).\n\n"
                    f"On a CPU the default lifts {DEMO_CPU_FRAMES:,} test frames spread evenly over the split (about "
                    "a minute on 2 cores with the C++ kernels); on a GPU all of them. --max-frames 0 takes all.",
        epilog="examples:\n"
               "  diffupose demo\n"
               "  diffupose demo --device cuda --out results/demo.png\n"
               "  diffupose demo --checkpoint runs/cmu/model --keypoints det --max-frames 0")
    demo.add_argument("-o", "--out", metavar="FIGURE", default="demo.png",
                      help="the figure to write (.png, .jpg, .pdf or .svg)")
    demo.add_argument("--keypoints", choices=("gt", "det"), default=None,
                      help="2D input: gt (exact projections) or det (with detector-like noise). Default: the set "
                           "the checkpoint was trained on where it records one, else gt")
    demo.add_argument("--max-frames", type=_nonneg_int, default=None, metavar="F",
                      help=f"lift at most F test frames, spread evenly over the split (0: all; default: "
                           f"{DEMO_CPU_FRAMES} on a CPU, all on a GPU)")
    demo.add_argument("--json", metavar="FILE", default=None, help="also write the numbers to this JSON file")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no notes (errors still shown)")
    _add_model_options(demo, "checkpoint to run: <stem>.safetensors + <stem>.json, the stem, or a folder with "
                             "model.* (default: the shipped GCN, diffupose/assets/checkpoints/cmu_hdm05_gcn)",
                       flip_default=True, batch_default="4096 on CUDA, about 4096 / N on CPU")
    demo.set_defaults(func=cmd_demo)
    return parser


def cmd_import_mocap(args) -> int:
    from .data.build_cmu import import_mocap

    return _call_import_mocap(import_mocap, args)


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


# ---------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------
class _Reporter:
    def __init__(self, command: str, quiet: bool = False):
        self.command, self.quiet = command, quiet

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"{PROG} {self.command}: note: {text}", file=sys.stderr)

    def warn(self, text: str) -> None:
        """What the user must know about the result (shown even with -q)."""
        print(f"{PROG} {self.command}: warning: {text}", file=sys.stderr)


def _device(spec: str):
    from .api import resolve_device

    return resolve_device(spec)


def _torch_dtype(name: str):
    from .api import torch_dtype

    return torch_dtype(name)


def load_model(checkpoint: Optional[str], device, allow_regressor: bool = False):
    """(model, diffusion, config, the checkpoint's weights path) through api.load_model, the
    shipped checkpoint being this module's DEFAULT_CHECKPOINT; CliError for anything unusable."""
    from .api import load_model as _load

    return _load(checkpoint, device, allow_regressor, shipped=DEFAULT_CHECKPOINT)


def pick_backend(requested: str, model, diffusion, device, dtype, report: _Reporter) -> str:
    """api.pick_backend, its fallbacks reported as notes."""
    from .api import pick_backend as _pick

    return _pick(requested, model, diffusion, device, dtype, report.note)


# ---------------------------------------------------------------------------------------------
# lift
# ---------------------------------------------------------------------------------------------
def cmd_lift(args) -> int:
    """`diffupose lift`: the API (diffupose.api) with messages: read and check the input, load the
    lifter, lift into the output (PoseLifter.lift_to_file), say what happened."""
    from .api import load_lifter, read_input, unreliable_text
    from .keypoints import check_output_path
    from .keypoints.writers import output_formats

    report = _Reporter("lift", args.quiet)
    out = check_output_path(args.output, inputs=[args.input], formats=output_formats())
    inp = read_input(args.input, layout=args.layout, image_size=args.image_size, normalized=args.normalized,
                     skip_empty=args.skip_empty, min_score=args.min_score, person=args.person, key=args.key,
                     check_layout=not args.no_layout_check)
    for n in inp.notes:
        report.note(n)
    for w in inp.warnings:
        report.warn(w)
    lifter = load_lifter(args.checkpoint, device=args.device, hypotheses=args.hypotheses, steps=args.steps,
                         sampler=args.sampler, flip=args.flip, aggregate=args.aggregate, seed=args.seed,
                         batch_size=args.batch_size, backend=args.backend, dtype=args.dtype, smooth=args.smooth,
                         fps=args.fps, smooth_min_cutoff=args.smooth_min_cutoff, smooth_beta=args.smooth_beta,
                         on_note=report.note, _shipped=DEFAULT_CHECKPOINT)
    lifter.check_input(inp)
    sm = lifter.lift_to_file(inp, out, progress=not args.quiet)
    if sm.removed_stale:
        report.note(f"removed {len(sm.removed_stale)} temporary folder(s) that killed earlier lifts to {out} "
                    "left behind")
    if sm.unreliable_frames:
        report.warn(unreliable_text(sm.unreliable_frames, sm.frames, sm.unreliable_first, inp.kp.frame_ids))
    st, F, J = lifter.settings, sm.frames, lifter.skeleton.num_joints
    print(f"lifted {F} frames x {st['hypotheses']} hypotheses in {sm.seconds:.1f} s ({F / max(sm.seconds, 1e-9):.0f} "
          f"frames/s, {st['backend']} on {st['device']}): mean per-joint spread {100 * sm.spread_sum / (F * J):.1f} "
          f"cm, {sm.weak_joints} weak joints, {sm.unreliable_frames} unreliable frames -> {out}")
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
        raise CliError("writing .mp4 needs ffmpeg, which is not on PATH, nor the imageio-ffmpeg package that "
                       "ships one; `pip install imageio-ffmpeg` (or diffupose[video]), or write a .gif (-o clip.gif)")
    if ext == ".gif" and len(rows) > viz.MAX_GIF_FRAMES:
        raise CliError(f"a GIF of {len(rows)} frames is held in memory while written; keep it under "
                       f"{viz.MAX_GIF_FRAMES} with --start/--stop/--step, or write .mp4 (ffmpeg)")
    viz.save_clip(res, rows, out, fps=args.fps, max_hyp=args.max_hypotheses, elev=args.elev, azim=args.azim,
                  dpi=args.dpi, progress=not args.quiet)
    print(f"{len(rows)} frames -> {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# eval and demo
# ---------------------------------------------------------------------------------------------
def _sampling(args, model, diffusion, device, report: _Reporter):
    """(steps, dtype, backend) for eval and demo."""
    from .model import is_regressor

    dtype = _torch_dtype(args.dtype)
    if args.steps is not None and args.sampler == "ddpm":
        report.note(f"--steps is ignored by --sampler ddpm (it takes all {diffusion.cfg.T} steps)")
    steps = args.steps or 5
    if is_regressor(model):  # one forward pass, no sampler: nothing to probe
        return steps, dtype, (None if args.backend == "auto" else args.backend)
    return steps, dtype, pick_backend(args.backend, model, diffusion, device, dtype, report)


def _lift_and_score(model, diffusion, test, ns, args, steps, dtype, backend, device, *, oracle: bool,
                    keep: bool):
    from .evaluate import evaluate_model

    try:
        return evaluate_model(model, diffusion, test, hypotheses=ns, steps=steps, sampler=args.sampler, flip=args.flip,
                              aggregate=args.aggregate, seed=args.seed, backend=backend, batch_frames=args.batch_size,
                              dtype=dtype, device=device, progress=not args.quiet, oracle=oracle,
                              keep_predictions=keep)
    except FloatingPointError as e:
        raise CliError(f"{e}" + (f" in {args.dtype}; try --dtype fp32" if args.dtype != "fp32" else
                                 "; the checkpoint may be broken")) from None


def _settings_text(args, model, steps, backend, device) -> str:
    from .model import is_regressor

    if is_regressor(model):
        how = "deterministic regressor"
    else:
        how = (f"{steps} DDIM steps" if args.sampler == "ddim" else "DDPM (all steps)") + f", {args.aggregate} of N"
    return f"{how}, flip {'on' if args.flip else 'off'}, {backend or 'auto'} kernels on {device}"


def _subset_text(test, total: int) -> str:
    if len(test) == total:
        return f"all {total:,} test frames"
    return f"{len(test):,} of {total:,} test frames (about 1 in {total / len(test):.0f}, spread evenly)"


def cmd_eval(args) -> int:
    from .evaluate import ORACLE_ROW, load_test_sets, results_doc, subsample, tables, write_results_json
    from .keypoints import check_output_path
    from .model import is_regressor

    report = _Reporter("eval", args.quiet)
    json_out = check_output_path(args.json, formats=(".json",)) if args.json else None
    if args.dataset in ("h36m", "humaneva") and args.data_dir is None:
        raise CliError(f"--dataset {args.dataset} needs --data-dir DIR, the folder with your copy of its files "
                       "(VideoPose3D layout; the data are not shipped)")
    device = _device(args.device)
    model, diffusion, config, wpath = load_model(args.checkpoint, device, allow_regressor=True)
    _, test_all, keypoints, kp_source = load_test_sets(args.dataset, args.data_dir, args.keypoints, args.cameras,
                                                       config,
                                                   model)
    steps, dtype, backend = _sampling(args, model, diffusion, device, report)
    test, _ = subsample(test_all, args.max_frames)
    ns = (1,) if is_regressor(model) else tuple(dict.fromkeys(args.hypotheses))
    if is_regressor(model) and tuple(args.hypotheses) != (1,):
        report.note("the checkpoint is a deterministic regressor: one prediction per frame (N = 1)")
    print(f"evaluating {wpath.with_suffix('')} ({model.cfg.arch}) on {args.dataset}: "
          f"{_subset_text(test, len(test_all))}, "
          f"{len(test.actions())} actions, 2D input {keypoints!r} ({kp_source}); "
          f"{_settings_text(args, model, steps, backend, device)}", flush=True)
    evals = _lift_and_score(model, diffusion, test, ns, args, steps, dtype, backend, device, oracle=args.oracle,
                            keep=False)
    method = {"gcn": "DiffuPose"}.get(model.cfg.arch, model.cfg.arch)
    print()
    print(tables(evals, method=method, title=f"{args.dataset} test. ", oracle_row=ORACLE_ROW))
    print()
    for n, ev in evals.items():
        print(f"N={n}: lifted {len(test):,} frames in {ev.extra['seconds']:.1f} s ({ev.extra['fps']:,.0f} frames/s)")
    if json_out is not None:
        settings = {"hypotheses": list(ns), "steps": steps if args.sampler == "ddim" else diffusion.cfg.T,
                    "sampler": args.sampler, "flip": args.flip, "aggregate": args.aggregate, "seed": args.seed,
                    "batch_size": args.batch_size, "device": str(device), "backend": backend, "dtype": args.dtype,
                    "oracle": args.oracle}
        dataset = {"name": args.dataset, "data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None,
                   "keypoints": keypoints, "split": "test", "frames": len(test), "frames_in_split": len(test_all)}
        write_results_json(json_out, results_doc("eval", config, wpath, dataset, settings, evals))
        print(f"results -> {json_out}")
    return 0


def cmd_calibrate(args) -> int:
    from . import calibration

    if not 0.5 <= args.coverage <= 0.999:
        raise CliError(f"--coverage must be in [0.5, 0.999], got {args.coverage}")
    if args.hypotheses < 2:
        raise CliError("-n must be at least 2: one hypothesis has no spread")
    device = _device(args.device)
    model, diffusion, config, wpath = load_model(args.checkpoint, device)
    try:
        val = calibration.validation_rows(config)
        # held-out people (two or more): fitted so that it holds from one person to another
        by_person = len((config.get("dataset") or {}).get("val_subjects") or []) >= 2
        correction = None
        if args.person_correction:
            if by_person:
                raise calibration.CalibrationError("its validation rows are held-out people already: it is calibrated "
                                                   "by person, without --person-correction")
            from .checkpoint import CheckpointError, read_config

            try:  # their calibrations only (configs, checked): the weights are not needed
                refs = [read_config(p).get(calibration.CALIBRATION_KEY) for p in args.person_correction]
            except CheckpointError as e:
                raise CliError(f"--person-correction: {e}") from None
            names = [Path(p).name if Path(p).name != "model" else Path(p).parent.name for p in args.person_correction]
            factor = calibration.person_correction(*refs, len(model.skeleton.parents), tuple(args.person_correction))
            if refs[0]["n_hyp"] != args.hypotheses:
                raise calibration.CalibrationError(f"the person correction was measured at N = {refs[0]['n_hyp']}, "
                                                   f"not -n {args.hypotheses}")
            correction = {"factor": factor, "from": names}
        calib = calibration.fit(model, diffusion, val, n_hyp=args.hypotheses, steps=args.steps, target=args.coverage,
                                max_frames=args.max_frames or None, progress=not args.quiet, by_person=by_person,
                                correction=correction)
    except calibration.CalibrationError as e:
        raise CliError(f"{wpath.with_suffix('')}: {e}") from None
    cpath = calibration.write(wpath.with_suffix(""), calib)
    scale = [k for k in calib["spread_scale"] if k > 0]
    print(f"fitted on {calib['val_frames']:,} validation rows, N = {args.hypotheses}, {args.steps} DDIM steps: "
          f"{calib['raw_coverage']:.1%} of joint errors were within 2x spread; scales {min(scale):.2f}-{max(scale):.2f} "
          + (f"(the fit times the person correction {min(correction['factor'][1:]):.2f}-"
             f"{max(correction['factor'][1:]):.2f}) " if correction else "")
          + f"put {calib['fitted_coverage']:.1%} within factor x scale x spread"
          + (f" (fitted at the {calib['level']:.1%} level, where scales fitted on one of {', '.join(calib['people'])} "
             f"covered {calib['cross_person_coverage']:.1%} of another's errors)" if "level" in calib else "")
          + f" -> {cpath}")
    return 0


def cmd_demo(args) -> int:
    from . import demo as demo_fig
    from .evaluate import evaluate_mean_pose, load_test_sets, results_doc, subsample, tables, write_results_json
    from .keypoints import check_output_path
    from .metrics import mpjpe_per_frame

    t_start = time.perf_counter()
    report = _Reporter("demo", args.quiet)
    out = check_output_path(args.out, formats=IMAGE_FORMATS)
    json_out = check_output_path(args.json, formats=(".json",)) if args.json else None
    device = _device(args.device)
    model, diffusion, config, wpath = load_model(args.checkpoint, device)
    train, test_all, keypoints, kp_source = load_test_sets("cmu", None, args.keypoints, None, config, model)
    steps, dtype, backend = _sampling(args, model, diffusion, device, report)
    max_frames = args.max_frames if args.max_frames is not None else (0 if device.type == "cuda" else DEMO_CPU_FRAMES)
    test, _ = subsample(test_all, max_frames)
    subset = _subset_text(test, len(test_all))
    if args.max_frames is None and len(test) < len(test_all):
        subset += "; the CPU default, --max-frames 0 for all"
    ns = tuple(dict.fromkeys((1, args.hypotheses)))
    print(f"DiffuPose demo on the embedded CMU mocap test split (an unseen person and unseen takes): {subset}; "
          f"2D input {keypoints!r} ({kp_source})", flush=True)
    print(f"checkpoint {wpath.with_suffix('')} ({model.cfg.arch}, d_model {model.cfg.d_model}, "
          f"{model.cfg.n_blocks} blocks); {_settings_text(args, model, steps, backend, device)}", flush=True)

    evals = _lift_and_score(model, diffusion, test, ns, args, steps, dtype, backend, device, oracle=False, keep=True)
    base_name = "mean pose (training set)"
    base = evaluate_mean_pose(train, test)

    # the headline: the model beside the baseline, and how fast
    rows = [(base_name, base, None)] + [(f"DiffuPose N={n}", ev, ev) for n, ev in evals.items()]
    w = max(len(r[0]) for r in rows)
    print()
    print(f"{'':{w}}  {'MPJPE':>7}  {'P-MPJPE':>7}  {'lifting':>8}  {'frames/s':>8}")
    print(f"{'':{w}}  {'(mm)':>7}  {'(mm)':>7}  {'(s)':>8}  {'':>8}")
    for name, ev, timed in rows:
        t = f"{timed.extra['seconds']:8.1f}  {timed.extra['fps']:8,.0f}" if timed else f"{'-':>8}  {'-':>8}"
        print(f"{name:{w}}  {ev.mpjpe['Avg']:7.1f}  {ev.p_mpjpe['Avg']:7.1f}  {t}")
    margins = []
    for n, ev in evals.items():
        pct = 100 * (1 - ev.mpjpe["Avg"] / base.mpjpe["Avg"])
        margins.append(f"N={n} {abs(pct):.0f}% {'below' if pct >= 0 else 'ABOVE'}")
    print(f"MPJPE against the mean-pose baseline: {', '.join(margins)} (averages over actions)")
    print()
    print(tables(evals, method="DiffuPose", title="per action. ", baselines={base_name: base}))

    # the figure: per-action bars and one example frame (a fixed row: chosen without the ground truth)
    row = len(test) // 2
    n_top = max(evals)
    pred = evals[n_top].extra["prediction"]
    example = demo_fig.example_output(test.pose2d[row], pred.hypotheses[row], pred.mean[row], model.skeleton,
                                      aggregate=args.aggregate, frame=int(test.frame[row]))
    err = float(mpjpe_per_frame(pred.mean[row], test.pose3d[row]))
    bars = {f"DiffuPose N={n}": ev.mpjpe for n, ev in evals.items()}
    bars[base_name] = base.mpjpe
    demo_fig.save_demo_figure(
        out, bars, test.actions(), example, ground_truth=test.pose3d[row], baseline=base_name,
        title=f"DiffuPose on the CMU test split ({len(test):,} frames, 2D {keypoints}): MPJPE "
              + ", ".join(f"N={n} {ev.mpjpe['Avg']:.0f} mm" for n, ev in evals.items())
              + f", mean pose {base.mpjpe['Avg']:.0f} mm",
        example_title=f"example: subject {test.subject[row]}, clip {test.clip[row]} ({test.action[row]}), camera "
                      f"{int(test.camera[row])}, frame {int(test.frame[row])}: {args.aggregate} of {n_top} "
                      f"hypotheses, MPJPE {err:.0f} mm")
    if json_out is not None:
        settings = {"hypotheses": list(ns), "steps": steps if args.sampler == "ddim" else diffusion.cfg.T,
                    "sampler": args.sampler, "flip": args.flip, "aggregate": args.aggregate, "seed": args.seed,
                    "batch_size": args.batch_size, "device": str(device), "backend": backend, "dtype": args.dtype}
        dataset = {"name": "cmu", "data_dir": None, "keypoints": keypoints, "split": "test", "frames": len(test),
                   "frames_in_split": len(test_all)}
        doc = results_doc("demo", config, wpath, dataset, settings, evals, baselines={base_name: base})
        doc["figure"] = str(out.resolve())
        write_results_json(json_out, doc)
    wall = time.perf_counter() - t_start
    lifted = len(test) * len(evals)
    lift_s = sum(ev.extra["seconds"] for ev in evals.values())
    print()
    print(f"wall time {wall:.1f} s in all (lifting {lifted:,} frames: {lift_s:.1f} s, "
          f"{lifted / max(lift_s, 1e-9):,.0f} frames/s); figure -> {out}" + (f"; numbers -> {json_out}" if json_out else ""))
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
        with _terminate_like_interrupt():
            return args.func(args)
    except Terminated:
        print(f"{where}: terminated (SIGTERM); nothing was written, an earlier output is left as it was",
              file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure becomes one line; DIFFUPOSE_DEBUG=1 re-raises
        if os.environ.get("DIFFUPOSE_DEBUG", "").strip() not in ("", "0"):
            raise
        print(f"{where}: error: {_describe(e, args)}", file=sys.stderr)
        return 1


class Terminated(KeyboardInterrupt):
    """SIGTERM (a `kill`, a job scheduler's stop), raised where Ctrl-C would be so that the same
    clean-ups run (the writer's temporaries removed, an earlier output kept)."""


@contextlib.contextmanager
def _terminate_like_interrupt():
    """Turn SIGTERM into Terminated while a command runs (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _describe(e: Exception, args) -> str:
    """One line for any exception: ours carry their message; the rest say what kind they are."""
    from .checkpoint import CheckpointError
    from .data.user_files import UserFileError
    from .keypoints import KeypointError

    try:
        import torch

        oom = (torch.cuda.OutOfMemoryError,)
    except Exception:  # noqa: BLE001
        oom = ()
    if isinstance(e, oom) or isinstance(e, MemoryError):
        return (f"out of memory with --batch-size {getattr(args, 'batch_size', None) or 'default'} x "
                f"{getattr(args, 'hypotheses', '?')} hypotheses; lower --batch-size")
    if isinstance(e, (CliError, KeypointError, CheckpointError, UserFileError)):
        text = str(e)
    elif isinstance(e, OSError):
        text = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    else:
        text = f"unexpected {type(e).__name__}: {e} (DIFFUPOSE_DEBUG=1 shows the traceback; please report it)"
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
