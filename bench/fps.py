"""Multi-hypothesis lifting throughput: frames per second, latency p50/p99 and peak memory, for
each execution path side by side in one process, beside the GEMM floor of each configuration.

Paths (the baselines are in diffupose/baselines.py):
  eager                  the model on the reference ops (plain PyTorch) + the reference sampler step
                         (x0 clipped, as on every path; x_T from torch.randn): the natural eager
                         formulation
  compile                the same math as one pure function of plain tensors (weights, affinities,
                         per-step scale-shifts taken out of the model), the whole k-step loop through
                         torch.compile(fullgraph=True, dynamic=False): one graph per (batch, N), no
                         guard on t, no recompile (the row says graphs=1). Mode (--compile-mode):
                         max-autotune on a GPU (CUDA graphs included), default on the CPU
                         (max-autotune-no-cudagraphs there also tunes GEMM templates: a longer compile);
                         on by default (--no-compile to leave it out), its first call (the compile)
                         is reported apart and counts against --budget
  fused (per-layer ops)  the fused ops (C++ on the CPU, CUDA or Triton on a GPU), one op per layer and
                         sampler step, through diffupose.engine.Lifter(fused_sampler=False) (plain
                         Lifter() where Lifter has no such argument yet)
  fused sampler          the whole sampler as one fused CPU op, Lifter(fused_sampler=True): shown when
                         this Lifter takes the argument
  graph                  the per-layer fused ops with the whole loop captured in one CUDA graph (GPU only)
The Lifter paths run with center_root=False, so every path computes the same outputs.

GEMM floor: the denoiser's FLOPs (diffupose.baselines.denoiser_flops, ~37 MFLOP per pose per step
at d_m 256 / 4 blocks) times frames x N x steps, over the machine's matmul rate measured in the same
run (torch.mm of the hidden layer's actual shape [frames N J, d] x [d, 2d], the fastest call, with
the run's threads (--threads) or one, whichever is faster; a large GEMM's rate printed beside):
`floor ms`, and `of floor` = floor / p50, the fraction of the floor each path reaches (1 would be
pure GEMM time).

Memory: the paths are built one at a time; each path's objects, compiled code and CUDA graphs are
freed (torch._dynamo.reset, torch.cuda.empty_cache; on the CPU malloc_trim) before the next, so a
large GPU configuration never holds eager, compile and graph pools together. Peak = the most in
use during 3 calls after the timed ones (apart from them: the CPU's RSS poller is a thread), above
what was in use before the path was built (CUDA: allocated bytes, so static buffers and graph
pools count; CPU: resident set, which includes the compiler's own memory on the compile row).

Contention (--contend K): each path is timed alone and again beside K busy processes (Python
`while True` loops spawned here and killed afterwards), both p50s and their ratio side by side.

Examples:
  python bench/fps.py --ddim-steps 5
  python bench/fps.py --ddim-steps 5 --batch 1 1024 65536 --hyp 1 10 --dtype bf16 --json out.json
  python bench/fps.py --ddim-steps 5 --batch 1 --contend 1     # each path alone and beside a busy process
  python bench/fps.py --table6            # Table VI: FPS and MPJPE for 2/5/10/20/100 steps
Warm-up calls are excluded; each figure is the median over --repeats timed calls. On a machine
without a GPU every path that can run on the CPU is measured; configurations whose estimated
time (from the same path and N at a smaller batch, its first call / compile included) exceeds
--budget seconds are skipped and say so; the smallest batch of each N always runs.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import inspect
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import diffupose  # noqa: E402,F401  (first: it sets OpenMP's wait policy before torch loads the runtime)
import torch  # noqa: E402

from diffupose import ops  # noqa: E402
from diffupose.baselines import (CompiledDDIM, busy_processes, compile_counts, denoiser_flops, eager_ddim,  # noqa: E402
                                 reset_compiled)
from diffupose.diffusion import Diffusion, DiffusionConfig  # noqa: E402
from diffupose.engine import Lifter  # noqa: E402
from diffupose.model import ModelConfig, build_model  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# the fused sampler op (one CPU op for the whole loop) arrives as a Lifter argument; before it
# does, Lifter's only CPU path is the per-layer one
LIFTER_TAKES_FUSED_SAMPLER = "fused_sampler" in inspect.signature(Lifter).parameters


# ---------------------------------------------------------------------------------------------
# the paths
# ---------------------------------------------------------------------------------------------
def path_factories(args, device, model, diffusion, n_hyp, batch, dtype) -> dict:
    """name -> a function that builds the path's callable(y), for every path that can run here.
    Built one at a time by `measure`, so only one path holds memory at once."""
    steps = args.ddim_steps
    out = {"eager": lambda: eager_ddim(model, diffusion, n_hyp, steps, dtype)}
    if args.compile:
        out["compile"] = lambda: CompiledDDIM(model, diffusion, n_hyp, steps, dtype, mode=args.compile_mode)
    try:
        ops.resolve(args.backend, device)
    except ops.BackendUnavailable as e:
        print(f"# fused paths unavailable: {e}", file=sys.stderr)
        return out

    def lifter(**kw):
        return lambda: Lifter(model, diffusion, n_hyp=n_hyp, steps=steps, batch_frames=batch, dtype=dtype,
                              backend=args.backend, center_root=False, **kw)

    per_layer = {"fused_sampler": False} if LIFTER_TAKES_FUSED_SAMPLER else {}
    out["fused (per-layer ops)"] = lifter(cuda_graph=False, **per_layer)
    if LIFTER_TAKES_FUSED_SAMPLER:
        out["fused sampler"] = lifter(cuda_graph=False, fused_sampler=True)
    if device.type == "cuda":
        out["graph"] = lifter(cuda_graph=True, **per_layer)
    return out


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------
def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory of this process while active, sampled every millisecond (CPU runs)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        self.peak = rss()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def release(device) -> None:
    """Free what the last path held: its compiled code and CUDA graphs (dynamo's caches), cached
    CUDA blocks, and on the CPU the heap pages glibc keeps (so the next path's RSS growth shows)."""
    reset_compiled()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    else:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def in_use(device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else rss()


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------
def time_calls(fn, y, repeats, device) -> list[float]:
    """Sorted seconds of `repeats` calls (CUDA: event time)."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(y)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn(y)
            times.append(time.perf_counter() - t0)
    return sorted(times)


def peak_in_use(fn, y, calls, device, base) -> int:
    """The most memory in use above `base` over `calls` calls. Apart from the timed calls: the
    CPU's RSS poller is a thread that would take time from the path's own threads on 2 cores."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(calls):
            fn(y)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    with PeakRSS() as mem:
        for _ in range(calls):
            fn(y)
    return mem.peak - base


def p99(times: list[float]) -> float:
    return times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]


def measure(name, factory, y, args, device) -> dict:
    """Build one path, warm it up (the first call, a compile included, timed apart), time it
    alone (and beside --contend busy processes), then free it."""
    release(device)
    base = in_use(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    try:
        t0 = time.perf_counter()
        fn = factory()
        fn(y)
        sync()
        first_call = time.perf_counter() - t0
    except (ValueError, NotImplementedError, ops.BackendUnavailable) as e:  # e.g. a CPU-only op asked on a GPU
        return {"skipped": f"unavailable: {str(e).splitlines()[0]}"}
    for _ in range(args.warmup - 1):
        fn(y)
    times = time_calls(fn, y, args.repeats, device)
    out = {"p50_s": statistics.median(times), "p99_s": p99(times), "first_call_s": first_call,
           "peak": peak_in_use(fn, y, min(3, args.repeats), device, base)}
    if name == "compile":
        out.update(compile_counts())
    if args.contend:
        with busy_processes(args.contend):
            out["contended_p50_s"] = statistics.median(time_calls(fn, y, args.repeats, device))
    del fn
    release(device)
    return out


# ---------------------------------------------------------------------------------------------
# the GEMM floor
# ---------------------------------------------------------------------------------------------
def matmul_rate(device, dtype, m, k, n, threads=None, min_time=0.2) -> float:
    """FLOP/s of torch.mm [m, k] x [k, n]: the best of the calls filling ~min_time s (a floor is
    a bound: the fastest call is what the machine can do; a median would count other jobs'
    interference into it); threads: CPU intra-op threads for the measurement (None: as set)."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    saved = torch.get_num_threads()
    if threads is not None and device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        torch.mm(a, b)
        sync()
        times, spent = [], 0.0
        while len(times) < 5 or (spent < min_time and len(times) < 200):
            t0 = time.perf_counter()
            torch.mm(a, b)
            sync()
            times.append(time.perf_counter() - t0)
            spent += times[-1]
    finally:
        torch.set_num_threads(saved)
    return 2.0 * m * k * n / min(times)


LARGE_GEMM = {"cpu": (4096, 1024, 1024), "cuda": (8192, 8192, 8192)}
SHAPE_ROWS_CAP = {"cpu": 1 << 16, "cuda": 1 << 22}  # the rate is flat well before these


def gemm_floor(model, args, device, dtype, batch, n_hyp, rates) -> dict:
    """The configuration's FLOPs per call and its floor: those FLOPs at the best matmul rate
    measured now for its hidden layer's shape, with the run's threads or (CPU) one thread,
    whichever was faster (small GEMMs on a busy machine are faster on one: the bound is the best);
    also at the large GEMM's rate (`rates`, measured once per run)."""
    d = args.d_model
    rows = min(batch * n_hyp * model.net.inp.adj.shape[0], SHAPE_ROWS_CAP[device.type])
    flops = denoiser_flops(model) * batch * n_hyp * args.ddim_steps
    out = {"gflop_per_call": flops / 1e9, "mm_rows": rows,
           "mm_gflops": matmul_rate(device, dtype, rows, d, 2 * d) / 1e9}
    if device.type == "cpu":
        out["mm_gflops_1thread"] = matmul_rate(device, dtype, rows, d, 2 * d, threads=1) / 1e9
    out["floor_gflops"] = max(out["mm_gflops"], out.get("mm_gflops_1thread", 0.0))
    out["floor_s"] = flops / (out["floor_gflops"] * 1e9)
    large = max(rates["large_gflops"], rates.get("large_gflops_1thread", 0.0))
    out["floor_at_large_gemm_rate_s"] = flops / (large * 1e9)
    return out


def run_fps(args) -> tuple[list[dict], dict]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=args.d_model, n_blocks=args.blocks)).to(device).eval()
    diffusion = Diffusion(DiffusionConfig())
    m, k, n = LARGE_GEMM[device.type]
    rates = {"large_gemm": [m, k, n], "large_gflops": matmul_rate(device, dtype, m, k, n) / 1e9,
             "denoiser_mflop_per_pose_step": denoiser_flops(model) / 1e6}
    if device.type == "cpu":
        rates["large_gflops_1thread"] = matmul_rate(device, dtype, m, k, n, threads=1) / 1e9
    print("# matmul " + "  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in rates.items()),
          flush=True)  # GFLOP/s, the best call
    rows, floors = [], {}
    per_frame_cost: dict = {}
    first_call_extra: dict = {}
    with torch.no_grad():
        for n_hyp in args.hyp:
            for batch in sorted(args.batch):
                y = torch.randn(batch, 17, 2, device=device) * 0.3
                for name, factory in path_factories(args, device, model, diffusion, n_hyp, batch, dtype).items():
                    cost = per_frame_cost.get((name, n_hyp), 0.0) * batch * (args.repeats + args.warmup)
                    # the first call (a compile) counts only where there is an estimate to add it to: the
                    # smallest batch of each N always runs, so the batch-1 baselines are never skipped
                    est = cost * (2 if args.contend else 1) + first_call_extra.get((name, n_hyp), 0.0)
                    head = {"path": name, "batch": batch, "hyp": n_hyp}
                    if est > args.budget:
                        rows.append({**head, "skipped": f"estimated {est:.0f} s > budget {args.budget:.0f} s"})
                        print(f"{name:22s} B={batch:<6d} N={n_hyp:<3d} skipped ({rows[-1]['skipped']})", flush=True)
                        continue
                    if (batch, n_hyp) not in floors:
                        floors[(batch, n_hyp)] = gemm_floor(model, args, device, dtype, batch, n_hyp, rates)
                    floor = floors[(batch, n_hyp)]
                    res = measure(name, factory, y, args, device)
                    if "skipped" in res:
                        rows.append({**head, **res})
                        print(f"{name:22s} B={batch:<6d} N={n_hyp:<3d} skipped ({res['skipped']})", flush=True)
                        continue
                    per_frame_cost[(name, n_hyp)] = res["p50_s"] / batch
                    first_call_extra[(name, n_hyp)] = max(0.0, res["first_call_s"] - res["p50_s"])
                    rows.append(make_row(head, res, floor, args))
                    print(row_line(rows[-1]), flush=True)
                del y
    rates["configs"] = [{"batch": b, "hyp": h, **f} for (b, h), f in floors.items()]
    return rows, rates


def make_row(head: dict, res: dict, floor: dict, args) -> dict:
    med = res["p50_s"]
    row = {**head, "steps": args.ddim_steps, "dtype": args.dtype, "d_model": args.d_model,
           "fps": head["batch"] / med, "p50_ms": med * 1e3, "p99_ms": res["p99_s"] * 1e3,
           "peak_mem_mb": res["peak"] / 2**20, "first_call_s": res["first_call_s"],
           "floor_ms": floor["floor_s"] * 1e3, "of_floor": floor["floor_s"] / med}
    row.update({k: res[k] for k in ("graphs", "graph_breaks") if k in res})
    if "contended_p50_s" in res:
        row["contended_p50_ms"] = res["contended_p50_s"] * 1e3
        row["contended_ratio"] = res["contended_p50_s"] / med
    return row


def row_line(row: dict) -> str:
    extra = f"  graphs {row['graphs']} breaks {row['graph_breaks']}" if "graphs" in row else ""
    if "graphs" in row and (row["graphs"], row["graph_breaks"]) != (1, 0):
        extra += "  WARNING: not one graph (recompiled?): not the baseline"
    if "contended_p50_ms" in row:
        extra += f"  contended p50 {row['contended_p50_ms']:9.3f} ms ({row['contended_ratio']:.2f}x)"
    return (f"{row['path']:22s} B={row['batch']:<6d} N={row['hyp']:<3d} {row['fps']:>12,.0f} frames/s  "
            f"p50 {row['p50_ms']:9.3f} ms  p99 {row['p99_ms']:9.3f} ms  peak {row['peak_mem_mb']:8.1f} MB  "
            f"first call {row['first_call_s']:6.1f} s  {row['of_floor']:.2f} of floor{extra}")


def print_table(rows, rates, contend: int):
    print("\n| batch | N | GFLOP / call | mm rows | mm GFLOP/s | mm GFLOP/s 1 thread | floor ms "
          "| at the large GEMM's rate ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for f in rates["configs"]:
        one = f"{f['mm_gflops_1thread']:.1f}" if "mm_gflops_1thread" in f else ""
        print(f"| {f['batch']} | {f['hyp']} | {f['gflop_per_call']:.3f} | {f['mm_rows']} | {f['mm_gflops']:.1f} "
              f"| {one} | "
              f"{f['floor_s'] * 1e3:.3f} | {f['floor_at_large_gemm_rate_s'] * 1e3:.3f} |")
    cont = " p50 contended ms | contended / alone |" if contend else ""
    print("\n| path | batch | N | frames/s | p50 ms | p99 ms | peak MB | first call s | vs eager | floor ms "
          "| of floor |" + cont)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if contend else ""))
    eager = {(r["batch"], r["hyp"]): r for r in rows if r["path"] == "eager" and "fps" in r}
    for r in rows:
        if "fps" not in r:
            print(f"| {r['path']} | {r['batch']} | {r['hyp']} | skipped: {r['skipped']} | | | | | | | |" +
                  (" | |" if contend else ""))
            continue
        base = eager.get((r["batch"], r["hyp"]))
        ratio = f"{r['fps'] / base['fps']:.2f}x" if base else ""
        c = (f" {r['contended_p50_ms']:.3f} | {r['contended_ratio']:.2f}x |" if "contended_p50_ms" in r else " | |") \
            if contend else ""
        print(f"| {r['path']} | {r['batch']} | {r['hyp']} | {r['fps']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
              f"{r['peak_mem_mb']:.1f} | {r['first_call_s']:.1f} | {ratio} | {r['floor_ms']:.3f} | "
              f"{r['of_floor']:.2f} |{c}")


def environment(device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
           "cpu_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["cpu"] = platform.processor() or "cpu"
        env["openmp_wait"] = diffupose.openmp_wait_policy()
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        pass
    env["diffupose_ext"] = ops.has_extension()
    return env


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
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed calls first (at least 1: the first call is timed apart)")
    p.add_argument("--budget", type=float, default=None,
                   help="skip a configuration estimated above this many seconds, its first call (a compile) included "
                        "(default 120 on the CPU, 600 on a GPU, where max-autotune's compile is longer)")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="leave out the torch.compile baseline (on by default; it compiles for a minute or more "
                        "on 2 cores)")
    p.add_argument("--compile-mode", default=None,
                   help="inductor mode of the compile row (default: max-autotune on a GPU, which adds CUDA graphs; "
                        "default on the CPU, where max-autotune-no-cudagraphs also tunes GEMM templates: "
                        "a longer compile)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU intra-op threads for the paths (default: torch's, one per core)")
    p.add_argument("--contend", type=int, default=0, metavar="K",
                   help="also time each path beside K busy processes spawned here (default 0: off)")
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
    if args.contend < 0 or args.warmup < 1:
        p.error("--contend must be >= 0 and --warmup >= 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.compile_mode is None:
        args.compile_mode = "max-autotune" if device.type == "cuda" else "default"
    if args.budget is None:
        args.budget = 600.0 if device.type == "cuda" else 120.0
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    env = environment(device)
    print("# " + "  ".join(f"{k}={v}" for k, v in env.items()))
    print("# command: python " + " ".join(sys.argv))
    if device.type == "cpu" and diffupose.openmp_wait_policy() == "GOMP_SPINCOUNT=1000":
        # diffupose's default for shared CPUs; the plain-PyTorch baselines are faster with GNU's own
        # spinning on an idle machine (docs/BENCHMARKS.md, "the spin count"): say so beside the table
        print("# note: every path runs under diffupose's GOMP_SPINCOUNT=1000; MKL's multi-threaded GEMMs in the "
              "eager and compile rows can be several times faster with GNU's default: for the baselines at their "
              "best rerun with GOMP_SPINCOUNT=300000 (the fused sampler does not depend on it)")
    if args.table6:
        from diffupose.evaluate import table6

        rows, rates = table6(args, device), None
    else:
        print(f"# compile: {'mode ' + args.compile_mode if args.compile else 'off'}; fused sampler row: "
              f"{'yes' if LIFTER_TAKES_FUSED_SAMPLER else 'no (this Lifter has no fused_sampler argument)'}")
        rows, rates = run_fps(args)
        print_table(rows, rates, args.contend)
    if args.json:
        out = {"environment": env, "argv": sys.argv, "rows": rows}
        if rates is not None:
            out["matmul"] = rates
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"# wrote {args.json}")


if __name__ == "__main__":
    main()
