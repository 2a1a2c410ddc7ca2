"""Multi-hypothesis lifting throughput: frames per second, latency p50/p99 and peak memory, for
each execution path side by side in one process.

Paths:
  eager      reference model (plain PyTorch ops) + DDIM update in PyTorch (torch.randn noise):
             the natural efficient PyTorch formulation
  compile    the same, the whole k-step loop through torch.compile (mode max-autotune, which
             adds CUDA graphs on a GPU); on the CPU only with --compile (slow to compile)
  fused      the fused ops (C++ on the CPU, CUDA or Triton on a GPU) through diffupose.engine.Lifter
  graph      the fused ops with the whole loop captured in one CUDA graph (GPU only)

Examples:
  python bench/fps.py --ddim-steps 5
  python bench/fps.py --ddim-steps 5 --batch 1 1024 65536 --hyp 1 10 --dtype bf16 --json out.json
  python bench/fps.py --table6            # Table VI: FPS and MPJPE for 2/5/10/20/100 steps
Warm-up calls are excluded; each figure is the median over --repeats timed calls. On a machine
without a GPU every path that can run on the CPU is measured; configurations whose estimated
time exceeds --budget seconds are skipped and say so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffupose import ops  # noqa: E402
from diffupose.diffusion import Diffusion, DiffusionConfig  # noqa: E402
from diffupose.engine import Lifter  # noqa: E402
from diffupose.model import ModelConfig, build_model  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------
# the eager PyTorch baseline
# ---------------------------------------------------------------------------------------------
def eager_sampler(model, diffusion, n_hyp, steps, dtype):
    """DDIM (eta = 0) in plain PyTorch with the reference model: x_T from torch.randn, the update
    and the aggregation as tensor expressions."""
    plan = diffusion.plan(steps, eta=0.0)
    scale = diffusion.cfg.pose_scale

    def run(y):
        B, J, _ = y.shape
        yy = y.to(dtype).repeat_interleave(n_hyp, 0)
        x = torch.randn(B * n_hyp, J, 3, device=y.device)
        for t, c in plan:
            eps = model(x.to(dtype), yy, t, backend="reference")[0].float()
            x0 = (x - c.sqrt_1m_abar * eps) / c.sqrt_abar
            x = c.c_x0 * x0 + c.c_eps * eps
        hyp = x.view(B, n_hyp, J, 3)
        mean = hyp.mean(1)
        spread = (hyp - mean[:, None]).square().sum(-1).mean(1).sqrt()
        return hyp * scale, mean * scale, spread * scale

    return run


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------
class PeakRSS:
    """Peak resident memory of this process while active, sampled every millisecond (CPU runs)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.base = self.rss()
        self.peak = self.base
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def time_calls(fn, y, repeats, warmup, device):
    for _ in range(warmup):
        fn(y)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(y)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        with PeakRSS() as mem:
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn(y)
                times.append(time.perf_counter() - t0)
        peak = mem.peak - mem.base
    times.sort()
    p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
    return statistics.median(times), p99, peak


def paths_for(args, device, model, diffusion, n_hyp, batch, dtype):
    """name -> callable(y) for every path that can run here."""
    out = {}
    eager = eager_sampler(model, diffusion, n_hyp, args.ddim_steps, dtype)
    out["eager"] = eager
    if device.type == "cuda" or args.compile:
        mode = "max-autotune" if device.type == "cuda" else "default"
        out["compile"] = torch.compile(eager, mode=mode, dynamic=False)
    fused_backend = args.backend
    try:
        ops.resolve(fused_backend, device)
        out["fused"] = Lifter(model, diffusion, n_hyp=n_hyp, steps=args.ddim_steps, batch_frames=batch, dtype=dtype,
                              cuda_graph=False, backend=fused_backend)
        if device.type == "cuda":
            out["graph"] = Lifter(model, diffusion, n_hyp=n_hyp, steps=args.ddim_steps, batch_frames=batch,
                                  dtype=dtype, cuda_graph=True, backend=fused_backend)
    except ops.BackendUnavailable as e:
        print(f"# fused paths unavailable: {e}", file=sys.stderr)
    return out


def environment(device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
           "cpu_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["cpu"] = platform.processor() or "cpu"
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        pass
    env["diffupose_ext"] = ops.has_extension()
    return env


def run_fps(args) -> list[dict]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=args.d_model, n_blocks=args.blocks)).to(device).eval()
    diffusion = Diffusion(DiffusionConfig())
    rows = []
    per_frame_cost: dict[str, float] = {}
    with torch.no_grad():
        for n_hyp in args.hyp:
            for batch in sorted(args.batch):
                y = torch.randn(batch, 17, 2, device=device) * 0.3
                paths = paths_for(args, device, model, diffusion, n_hyp, batch, dtype)
                for name, fn in paths.items():
                    est = per_frame_cost.get((name, n_hyp), 0.0) * batch * (args.repeats + args.warmup)
                    if est > args.budget:
                        rows.append({"path": name, "batch": batch, "hyp": n_hyp, "skipped":
                                     f"estimated {est:.0f} s > budget {args.budget:.0f} s"})
                        print(f"{name:8s} B={batch:<6d} N={n_hyp:<3d} skipped ({rows[-1]['skipped']})", flush=True)
                        continue
                    med, p99, peak = time_calls(fn, y, args.repeats, args.warmup, device)
                    per_frame_cost[(name, n_hyp)] = med / batch
                    row = {"path": name, "batch": batch, "hyp": n_hyp, "steps": args.ddim_steps, "dtype": args.dtype,
                           "d_model": args.d_model, "fps": batch / med, "p50_ms": med * 1e3, "p99_ms": p99 * 1e3,
                           "peak_mem_mb": peak / 2**20}
                    rows.append(row)
                    print(f"{name:8s} B={batch:<6d} N={n_hyp:<3d} {row['fps']:>12,.0f} frames/s  "
                          f"p50 {row['p50_ms']:9.3f} ms  p99 {row['p99_ms']:9.3f} ms  peak {row['peak_mem_mb']:8.1f} MB",
                          flush=True)
    return rows


def print_table(rows):
    print("\n| path | batch | N | frames/s | p50 ms | p99 ms | peak MB | vs eager |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    eager = {(r["batch"], r["hyp"]): r for r in rows if r["path"] == "eager" and "fps" in r}
    for r in rows:
        if "fps" not in r:
            print(f"| {r['path']} | {r['batch']} | {r['hyp']} | skipped: {r['skipped']} | | | | |")
            continue
        base = eager.get((r["batch"], r["hyp"]))
        ratio = f"{r['fps'] / base['fps']:.2f}x" if base else ""
        print(f"| {r['path']} | {r['batch']} | {r['hyp']} | {r['fps']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
              f"{r['peak_mem_mb']:.1f} | {ratio} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ddim-steps", type=int, default=5, help="DDIM steps (default 5)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 1024, 65536], help="frames per call")
    p.add_argument("--hyp", type=int, nargs="+", default=[1, 10], help="hypotheses per frame (N)")
    p.add_argument("--d-model", type=int, default=256, help="denoiser width d_m (default 256)")
    p.add_argument("--blocks", type=int, default=4, help="residual blocks (default 4)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="activation dtype")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda", "triton"],
                   help="fused backend (default auto)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    p.add_argument("--budget", type=float, default=120.0, help="skip a configuration estimated above this (s)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile on the CPU (compiles slowly)")
    p.add_argument("--table6", action="store_true", help="reproduce Table VI (FPS and MPJPE vs steps)")
    p.add_argument("--checkpoint", default=None, help="checkpoint for --table6 (default: the shipped one)")
    p.add_argument("--dataset", default="cmu", help="dataset for --table6: cmu (embedded), h36m, humaneva")
    p.add_argument("--max-frames", type=int, default=None,
                   help="--table6: test rows lifted, spread evenly (default: all on a GPU, 1000 on the CPU; 0: all)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset's .npz files (h36m, humaneva)")
    p.add_argument("--json", default=None, help="write the rows and the environment to this file")
    args = p.parse_args(argv)
    if args.ddim_steps < 1 or min(args.batch) < 1 or min(args.hyp) < 1:
        p.error("--ddim-steps, --batch and --hyp must be >= 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    env = environment(device)
    print("# " + "  ".join(f"{k}={v}" for k, v in env.items()))
    print("# command: python " + " ".join(sys.argv))
    if args.table6:
        from diffupose.evaluate import table6

        rows = table6(args, device)
    else:
        rows = run_fps(args)
        print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "argv": sys.argv, "rows": rows}, indent=1))
        print(f"# wrote {args.json}")


if __name__ == "__main__":
    main()
