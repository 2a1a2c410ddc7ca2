"""Training recipes and the training command line shared by train/h36m.py and train/humaneva.py.

Defaults are the paper's recipe (Adam, lr 4e-5, decay 0.995 per epoch, batch 1024, 200 epochs,
flip augmentation, cosine schedule with T = 100, d_m 256). `--dataset cmu` (or hdm05, cmu+hdm05) switches
to a recipe sized for the embedded mocap sets on a CPU (minutes); every value can still be overridden.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

PAPER = dict(epochs=200, batch_size=1024, lr=4e-5, lr_decay=0.995, d_model=256, n_blocks=4)
# The embedded CMU set is ~100x smaller than Human3.6M and CPU time is short: a narrower model,
# a larger step size and fewer epochs. Not tuned by a search: it is the recipe of the shipped
# checkpoint (diffupose/assets/checkpoints/README.md: 6,600 steps, 13.5 min on 2 CPU cores, 53%
# below the mean-pose baseline's MPJPE at N = 10 on the embedded test split).
CMU_CPU = dict(epochs=40, batch_size=256, lr=1e-3, lr_decay=0.95, d_model=128, n_blocks=3)


def recipe_for(dataset: str) -> dict:
    from .data.dataset import COMBINED, EMBEDDED

    return dict(CMU_CPU if dataset in EMBEDDED or dataset in COMBINED else PAPER)


def pose_scale_of(pose3d: np.ndarray) -> float:
    """RMS of the root-relative coordinates (the root itself excluded), so normalised poses have
    about unit variance, as the diffusion's noise does."""
    return round(float(np.sqrt(np.mean(np.square(pose3d[:, 1:], dtype=np.float64)))), 4)


def build_parser(default_dataset: str) -> argparse.ArgumentParser:
    from .data.dataset import DATASETS
    from .diffusion import LOSS_WEIGHTINGS

    p = argparse.ArgumentParser(
        description="Train the DiffuPose denoiser (or an ablation baseline) and print the per-action tables.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="examples:\n"
               "  python train/h36m.py --data-dir ~/data/h36m --keypoints cpn_ft_h36m_dbb\n"
               "  python train/h36m.py --dataset cmu            # the embedded CMU set, on a CPU in minutes\n"
               "  python train/h36m.py --dataset cmu --resume --out runs/cmu\n"
               "  torchrun --nproc_per_node=4 train/h36m.py --data-dir ~/data/h36m")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default=default_dataset, choices=DATASETS,
                   help="cmu, hdm05: the embedded mocap sets; cmu+hdm05: both, each with its split")
    d.add_argument("--data-dir", default=None, help="folder with the VideoPose3D-layout .npz files (cmu: embedded)")
    d.add_argument("--keypoints", default="gt", help="2D keypoint set (gt, cpn_ft_h36m_dbb, hr; cmu: gt, det) or a path")
    d.add_argument("--cameras", default=None, help="cameras JSON in the h36m_cameras.json form (required for humaneva)")
    d.add_argument("--downsample", type=int, default=1, help="keep every k-th training frame")
    d.add_argument("--val-fraction", type=float, default=0.0,
                   help="hold out this share of the training rows, whole clips, as a validation set (not trained "
                        "on; recorded in the checkpoint, where the spread's calibration finds it)")
    d.add_argument("--val-subjects", nargs="+", default=None, metavar="S",
                   help="hold out these training people, all their rows, as the validation set instead (the "
                        "spread's calibration then sees new people, as the test does)")
    m = p.add_argument_group("model and diffusion (default: the paper's, or the CMU/CPU recipe)")
    m.add_argument("--arch", default="gcn", choices=["gcn", "mlp", "unet", "regressor", "mlp_regressor"],
                   help="mlp_regressor: Martinez et al.'s baseline (train/baselines.py sets its recipe)")
    m.add_argument("--norm", default=None, choices=["none", "batch", "layer"],
                   help="normalisation after the GCN's graph convolutions (default: ModelConfig's)")
    m.add_argument("--d-model", type=int, default=None, help="width d_m (paper: 256; 384 also reported)")
    m.add_argument("--blocks", type=int, default=None, help="residual blocks")
    m.add_argument("--schedule", default="cosine", choices=["cosine", "linear"])
    m.add_argument("--timesteps", type=int, default=100, help="diffusion steps T")
    m.add_argument("--lambda-y", type=float, default=0.1, help="weight of the 2D reconstruction loss")
    m.add_argument("--loss-weighting", default="eps", choices=LOSS_WEIGHTINGS,
                   help="eps loss per timestep: eps (uniform) or x0 (the implied x0's L1, capped; docs/RESULTS.md)")
    m.add_argument("--joint-weights", default="extremities", help="uniform, extremities, or J comma-separated numbers")
    t = p.add_argument_group("training (default: the paper's recipe, or the CMU/CPU recipe)")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--lr-decay", type=float, default=None, help="learning-rate factor per epoch")
    t.add_argument("--ema-decay", type=float, default=0.999)
    t.add_argument("--no-flip", action="store_true", help="no flip augmentation in training and testing")
    t.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda if available)")
    t.add_argument("--backend", default=None, choices=["auto", "reference", "cpu", "cuda", "triton"],
                   help="op backend (default auto: the fused kernels where built)")
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="the forward and loss through torch.compile around the fused ops (the first step compiles, "
                        "seconds; falls back to eager if compiling fails). Default: on for a single CPU process, "
                        "where it is the fastest step (docs/BENCHMARKS.md: training throughput), off on CUDA and "
                        "in distributed runs (not measured there)")
    t.add_argument("--out", default=None, help="run folder (default runs/<dataset>-<arch>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.add_argument("--save-every", type=int, default=0, help="also checkpoint every k steps")
    t.add_argument("--max-steps", type=int, default=0, help="stop after k steps (smoke tests)")
    t.add_argument("--no-progress", action="store_true")
    e = p.add_argument_group("evaluation")
    e.add_argument("--eval-hyp", type=int, nargs="+", default=[1, 10], help="N hypotheses for the final tables")
    e.add_argument("--eval-steps", type=int, default=5, help="DDIM steps for the final tables")
    e.add_argument("--eval-every", type=int, default=0, help="evaluate N=1 every k epochs (0: only at the end)")
    e.add_argument("--no-eval", action="store_true")
    return p


def compile_by_default(device: torch.device, distributed: bool) -> bool:
    """--compile's default: on for one CPU process, where the fused ops under torch.compile are the
    fastest training step measured (bench/train_throughput.py's cpu+compile row, ~1.1x the eager
    fused step); off on CUDA and with DDP, where it has not been measured."""
    return device.type == "cpu" and not distributed


def main(argv=None, default_dataset: str = "h36m") -> int:
    from .checkpoint import CheckpointError
    from .data.dataset import load_dataset
    from .diffusion import DiffusionConfig
    from .evaluate import evaluate_model, summary, tables
    from .model import ModelConfig
    from .training import TrainConfig, TrainData, Trainer, init_distributed

    args = build_parser(default_dataset).parse_args(argv)
    rec = recipe_for(args.dataset)
    pick = lambda v, k: rec[k] if v is None else v  # noqa: E731
    dev_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    distributed = init_distributed(torch.device(dev_name).type)
    rank = torch.distributed.get_rank() if distributed else 0
    if distributed and dev_name == "cuda":
        dev_name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    device = torch.device(dev_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        train, test = load_dataset(args.dataset, args.data_dir, args.keypoints, args.cameras)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    val_rows = 0
    if args.val_fraction and args.val_subjects:
        print("error: --val-fraction and --val-subjects are two ways to choose the validation rows: pass one",
              file=sys.stderr)
        return 2
    if args.val_fraction or args.val_subjects:
        from .data.dataset import split_validation, split_validation_subjects

        try:
            train, val = (split_validation_subjects(train, args.val_subjects) if args.val_subjects else
                          split_validation(train, args.val_fraction, args.seed))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        val_rows = len(val)
    if args.downsample > 1:
        train = train.subset(np.arange(len(train)) % args.downsample == 0)
    try:
        mcfg = ModelConfig(arch=args.arch, skeleton=train.skeleton.name, d_model=pick(args.d_model, "d_model"),
                           n_blocks=pick(args.blocks, "n_blocks"),
                           **({"norm": args.norm} if args.norm else {}))
        dcfg = DiffusionConfig(schedule=args.schedule, T=args.timesteps, lambda_y=args.lambda_y,
                               loss_weighting=args.loss_weighting, joint_weights=args.joint_weights,
                               pose_scale=pose_scale_of(train.pose3d))
        tcfg = TrainConfig(epochs=pick(args.epochs, "epochs"), batch_size=pick(args.batch_size, "batch_size"),
                           lr=pick(args.lr, "lr"), lr_decay=pick(args.lr_decay, "lr_decay"), ema_decay=args.ema_decay,
                           flip=not args.no_flip, amp=args.amp, seed=args.seed, save_every=args.save_every,
                           max_steps=args.max_steps, backend=args.backend, progress=not args.no_progress,
                           compile=compile_by_default(device, distributed) if args.compile is None else args.compile)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/{args.dataset}-{args.arch}")
    meta = {"dataset": {"name": args.dataset, "keypoints": args.keypoints, "train_frames": len(train),
                        "test_frames": len(test), "val_fraction": args.val_fraction, "val_frames": val_rows,
                        "val_seed": args.seed, **({"val_subjects": list(args.val_subjects)} if args.val_subjects
                                                  else {})}}
    trainer = Trainer(mcfg, dcfg, tcfg, TrainData.from_poseset(train, dcfg.pose_scale, device), out, device, meta)
    if args.resume:
        try:
            resumed = trainer.resume()
        except (CheckpointError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if rank == 0:
            print(f"resumed from {trainer.state_path} at epoch {trainer.epoch}, step {trainer.step}" if resumed else
                  f"nothing to resume in {out}: starting afresh")
    elif (out / "train_state.pt").exists():
        print(f"error: {out} already holds a run; pass --resume to continue it or --out for a new one", file=sys.stderr)
        return 2
    if rank == 0:
        print(f"training {mcfg.arch} d_model={mcfg.d_model} blocks={mcfg.n_blocks} on {args.dataset} "
              f"({len(train)} train / {len(test)} test frames) on {device}; pose_scale={dcfg.pose_scale} m; out={out}")

    def periodic_eval(tr):
        if not args.eval_every or tr.epoch % args.eval_every:
            return {}
        ev = evaluate_model(tr.ema_model(), tr.diffusion, test, hypotheses=(1,), steps=args.eval_steps,
                            flip=not args.no_flip, oracle=False, backend=args.backend)
        return summary(ev)

    trainer.run(periodic_eval)
    if distributed:
        torch.distributed.barrier()
    if rank == 0 and not args.no_eval:
        evals = evaluate_model(trainer.ema_model(), trainer.diffusion, test, hypotheses=args.eval_hyp,
                               steps=args.eval_steps, flip=not args.no_flip, progress=not args.no_progress,
                               backend=args.backend)
        text = tables(evals, method={"gcn": "DiffuPose"}.get(args.arch, args.arch),
                      title=f"{args.dataset} test, {args.eval_steps} DDIM steps, flip test: {not args.no_flip}. ")
        print(text)
        result = summary(evals)
        (out / "results.txt").write_text(text + "\n")
        (out / "results.json").write_text(json.dumps({"summary": result, "per_action": {
            n: {"mpjpe": ev.mpjpe, "p_mpjpe": ev.p_mpjpe, "oracle_mpjpe": ev.oracle_mpjpe} for n, ev in evals.items()},
            "args": vars(args)}, indent=1))
        trainer.export(out / "model", metrics=result)
        print(f"checkpoint: {out / 'model'}.safetensors (+ .json); tables: {out / 'results.txt'}")
    if distributed:
        torch.distributed.destroy_process_group()
    return 0
