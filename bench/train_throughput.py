"""Training throughput: samples per second of one optimiser step (forward, backward, Adam) of the
denoiser, reference ops vs fused ops, side by side in one process.

  python bench/train_throughput.py                      # d_m 256, batch 1024, every backend that runs here
  python bench/train_throughput.py --d-model 128 --batch 256 --amp bf16 --json out.json
Warm-up steps are excluded; the figure is the median step time over --repeats steps.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffupose import ops  # noqa: E402
from diffupose.diffusion import Diffusion, DiffusionConfig, joint_weights  # noqa: E402
from diffupose.model import ModelConfig, build_model  # noqa: E402
from diffupose.training import amp_dtype  # noqa: E402


def step_time(backend, args, device) -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=args.d_model, n_blocks=args.blocks)).to(device)
    diffusion = Diffusion(DiffusionConfig())
    w = joint_weights("extremities", model.skeleton).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x0 = torch.randn(args.batch, 17, 3, device=device)
    y = torch.randn(args.batch, 17, 2, device=device) * 0.3
    amp = amp_dtype(args.amp, device)

    def step():
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss, _ = diffusion.loss(lambda a, b, c: model(a, b, c, backend=backend), x0, y, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--amp", default="off", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    candidates = ["reference"] + (["cuda", "triton"] if device.type == "cuda" else ["cpu"])
    print(f"# torch {torch.__version__}, device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
          f" ({torch.get_num_threads()} threads), d_model {args.d_model}, blocks {args.blocks}, batch {args.batch}, "
          f"amp {args.amp}")
    print("# command: python " + " ".join(sys.argv))
    rows = []
    for backend in candidates:
        try:
            ops.resolve(backend, device)
        except ops.BackendUnavailable as e:
            print(f"# {backend}: unavailable ({e})")
            continue
        t = step_time(backend, args, device)
        rows.append({"backend": backend, "step_ms": t * 1e3, "samples_per_s": args.batch / t})
    base = next((r for r in rows if r["backend"] == "reference"), None)
    print("| backend | step ms | samples/s | vs reference |")
    print("|---|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['samples_per_s'] / base['samples_per_s']:.2f}x" if base else ""
        print(f"| {r['backend']} | {r['step_ms']:.1f} | {r['samples_per_s']:,.0f} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
