"""Measure a checkpoint's model-card numbers (diffupose/model_card.py) on the embedded test sets,
beside baseline checkpoints trained on the same data.

    python train/model_card.py --checkpoint runs/mocap-gcn-d128/model \\
        --baseline "MLP regressor (Martinez)=runs/mocap-mlp/model" --json card.json --md card.md
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffupose.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from diffupose.data.dataset import COMBINED, load_dataset  # noqa: E402
from diffupose.model_card import card, markdown  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=PATH",
                   help="a baseline checkpoint trained on the same data (repeatable)")
    p.add_argument("--dataset", default="cmu+hdm05", help="training data (the headline test set; a union's parts "
                                                          "are reported too)")
    p.add_argument("--keypoints", default="det")
    p.add_argument("--max-frames", type=int, default=0, help="test frames, spread evenly (0: all)")
    p.add_argument("--sampler-frames", type=int, default=1000)
    p.add_argument("--x0-frames", type=int, default=2000)
    p.add_argument("--json", default=None)
    p.add_argument("--md", default=None)
    args = p.parse_args(argv)
    try:
        model, diffusion, config = load_checkpoint(args.checkpoint)
        baselines = {}
        for spec in args.baseline:
            name, _, path = spec.rpartition("=")
            bm, bd, _ = load_checkpoint(path)
            baselines[name or path] = (bm, bd)
        train, test = load_dataset(args.dataset, keypoints=args.keypoints)
        parts = {f"{args.dataset} test": sorted(set(test.subject.tolist()))}
        for part in COMBINED.get(args.dataset, ()):
            parts[f"{part} test"] = sorted(set(load_dataset(part, keypoints=args.keypoints)[1].subject.tolist()))
    except (CheckpointError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    doc = card(model, diffusion, config, train, test, parts, baselines, max_frames=args.max_frames,
               sampler_frames=args.sampler_frames, x0_frames=args.x0_frames)
    doc.update(checkpoint=str(args.checkpoint), keypoints=args.keypoints,
               baselines={k: v for k, v in (s.rpartition("=")[::2] for s in args.baseline)})
    text = markdown(doc)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    if args.md:
        Path(args.md).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
