"""Training throughput: samples per second of one optimiser step (forward, backward, Adam) of the
denoiser, side by side in one process:

  reference  the model on the reference ops (plain PyTorch)
  compile    the same reference step through torch.compile: the forward and the loss as one graph
             (fullgraph=True; AOT autograd compiles its backward as one graph too), and Adam's step
             as one graph (torch.optim breaks the graph on purpose at the step's entry, to run it
             under no_grad, so that function is compiled without fullgraph: the row reports the
             graphs and breaks counted, 2 and 1, and that no step after the first recompiled).
             Mode (--compile-mode): default (max-autotune on a GPU); --no-compile leaves it out
  cpu / cuda / triton   the fused ops, and Adam as train/h36m.py runs it (diffupose.training.adam:
             torch's fused Adam kernel); the reference rows run torch.optim.Adam's default
  cpu/two-ops  the fused ops with a layer's graph convolution and batch norm as two ops (mgcn, then
             norm_act) instead of one (mgcn_norm): what fusing them buys
  cpu/one-gemm  two-ops with each training GEMM as one threaded BLAS call (what the CPU op ran
             before its GEMMs went per group of samples inside its own parallel region): what that buys
  cpu/norm-in-torch  the fused convolution with the training batch norm and epilogue in PyTorch instead of
             diffupose::norm_act (what the CPU layer ran before that op): what the op buys
  cpu+compile (cuda+compile, ...)  the fused ops with the rest of the forward and the loss
             through torch.compile the same way (fullgraph: the ops have fake kernels, so the graph
             holds them whole; 1 graph, 0 breaks); Adam is the fused kernel, not compiled

  python bench/train_throughput.py                      # d_m 256, batch 1024, every backend that runs here
  python bench/train_throughput.py --d-model 128 --batch 256 --amp bf16 --json out.json
Every path is built and warmed up first (the compile row's first step, the compile, is reported
apart), then the paths are timed in turns, one step each per round (--repeats rounds): the
figure is each path's median, and a machine whose speed drifts slows all of them alike.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import diffupose  # noqa: E402,F401  (first: it sets OpenMP's wait policy before torch loads the runtime)
import torch  # noqa: E402

from diffupose import layers, ops  # noqa: E402
from diffupose.baselines import busy_processes, compile_counts, reset_compiled  # noqa: E402
from diffupose.diffusion import Diffusion, DiffusionConfig, joint_weights  # noqa: E402
from diffupose.model import ModelConfig, build_model  # noqa: E402
from diffupose.training import adam, amp_dtype, hold_heap  # noqa: E402


@contextlib.contextmanager
def layer_as(form):
    """The CPU training layer with a batch norm (ModulatedGraphConv.train_norm_cpu: ops.mgcn_norm)
    swapped for another form of the same math."""
    fused = layers.ModulatedGraphConv.train_norm_cpu
    layers.ModulatedGraphConv.train_norm_cpu = form
    try:
        yield
    finally:
        layers.ModulatedGraphConv.train_norm_cpu = fused


@contextlib.contextmanager
def one_gemm():
    """The layer as two ops (mgcn, norm_act) with the CPU graph convolution's training GEMMs as one
    threaded BLAS call each (before group GEMMs)."""
    from diffupose import _C

    was = _C.set_mgcn_group_gemm(False)
    try:
        with layer_as(layers.ModulatedGraphConv.train_norm_two_ops):
            yield
    finally:
        _C.set_mgcn_group_gemm(was)


CPU_VARIANTS = {  # row -> the context it runs in
    "cpu/two-ops": lambda: layer_as(layers.ModulatedGraphConv.train_norm_two_ops),
    "cpu/norm-in-torch": lambda: layer_as(layers.ModulatedGraphConv.train_norm_torch),
    "cpu/one-gemm": one_gemm,
}


def build_step(backend, args, device, compiled=False, context=contextlib.nullcontext):
    """(step, info): one optimiser step of a fresh model on `backend` ('reference' when compiled),
    run inside `context` (a CPU variant's switch), warmed up; info holds its first step's seconds
    (the compile, for a compiled step) and, compiled, dynamo's counts that its warm-up added."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=args.d_model, n_blocks=args.blocks)).to(device)
    diffusion = Diffusion(DiffusionConfig())
    w = joint_weights("extremities", model.skeleton).to(device)
    # the reference step (eager and compiled) runs torch.optim.Adam as a user of plain PyTorch would;
    # the fused backends run what train/h36m.py runs (diffupose.training.adam: the fused Adam kernel)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4) if backend == "reference" else adam(model.parameters(), 1e-4)
    x0 = torch.randn(args.batch, 17, 3, device=device)
    y = torch.randn(args.batch, 17, 2, device=device) * 0.3
    amp = amp_dtype(args.amp, device)

    def loss_of(x0, y):
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            return diffusion.loss(lambda a, b, c: model(a, b, c, backend=backend), x0, y, w)[0]

    opt_step = opt.step
    if compiled:
        opts = {"mode": args.compile_mode} if args.compile_mode != "default" else {}
        loss_of = torch.compile(loss_of, fullgraph=True, dynamic=False, **opts)
        if backend == "reference":  # the fused Adam kernel is one call already (dynamo breaks on it)
            opt_step = torch.compile(opt.step, dynamic=False, **opts)  # not fullgraph: torch.optim's own break
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        with context():
            loss = loss_of(x0, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt_step()
        sync()

    before = compile_counts()
    t0 = time.perf_counter()
    step()
    info = {"first_step_s": time.perf_counter() - t0}
    for _ in range(args.warmup - 1):
        step()
    if compiled:
        after = compile_counts()
        info.update({k: after[k] - before[k] for k in after})
    return step, info


def interleaved_medians(steps: dict, repeats: int) -> dict:
    """Median seconds per step of each path, timed in turns (one step of each, repeats times), so
    that a machine whose speed drifts (a shared VM: 1.5x within a minute) slows every path alike
    and the ratios within one run hold; timing one path after another let the drift pick winners."""
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--amp", default="off", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (at least 1)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="leave out the torch.compile row")
    p.add_argument("--compile-mode", default=None,
                   help="inductor mode (default: max-autotune on a GPU, default on the CPU)")
    p.add_argument("--contend", type=int, default=0, metavar="K",
                   help="also time each path beside K busy processes (threads that wait by spinning collapse there)")
    p.add_argument("--free-heap", action="store_true",
                   help="leave glibc's malloc returning freed memory to the OS (Trainer.run holds it: training.hold_heap)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.warmup < 1:
        p.error("--warmup must be >= 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.compile_mode is None:
        args.compile_mode = "max-autotune" if device.type == "cuda" else "default"
    fused = ["cuda", "triton"] if device.type == "cuda" else ["cpu"]
    candidates = ["reference"] + (["compile"] if args.compile else []) + fused + \
        (list(CPU_VARIANTS) if device.type == "cpu" else []) + \
        ([f"{b}+compile" for b in fused] if args.compile else [])
    print(f"# torch {torch.__version__}, device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
          f" ({torch.get_num_threads()} threads), d_model {args.d_model}, blocks {args.blocks}, batch {args.batch}, "
          f"amp {args.amp}, OpenMP wait {diffupose.openmp_wait_policy()}" + ("" if args.free_heap else ", heap held"))
    print("# command: python " + " ".join(sys.argv))
    reset_compiled()
    steps, infos = {}, {}
    for name in candidates:
        backend = "reference" if name == "compile" else name.split("+")[0].split("/")[0]
        try:
            ops.resolve(backend, device)
        except ops.BackendUnavailable as e:
            print(f"# {backend}: unavailable ({e})")
            continue
        steps[name], infos[name] = build_step(backend, args, device, compiled=name.endswith("compile"),
                                              context=CPU_VARIANTS.get(name, contextlib.nullcontext))
        print(f"# {name}: built, first step {infos[name]['first_step_s']:.1f} s"
              + (f", graphs {infos[name]['graphs']} breaks {infos[name]['graph_breaks']}" if "graphs" in infos[name]
                 else ""), flush=True)
    warm = compile_counts()
    gc.collect()
    gc.freeze()  # as Trainer.run does: the cyclic GC then walks only what the steps allocate (every row alike)
    if not args.free_heap:
        hold_heap()  # as Trainer.run does, every row alike: freed activations stay in the heap
    alone = interleaved_medians(steps, args.repeats)
    contended = {}
    if args.contend:
        with busy_processes(args.contend):
            contended = interleaved_medians(steps, args.repeats)
    if compile_counts() != warm:  # a compiled step recompiled or broke while timed: not the baseline's time
        print(f"# WARNING: dynamo compiled again while timing ({warm} -> {compile_counts()}): a compiled row "
              "recompiled, so its time is not the baseline's", flush=True)
    rows = []
    for name, info in infos.items():
        expected = (2, 1) if name == "compile" else (1, 0)  # the reference adds Adam's graph and torch.optim's break
        if "graphs" in info and (info["graphs"], info["graph_breaks"]) != expected:
            print(f"# WARNING: {name} was expected as {expected[0]} graph(s) and {expected[1]} break(s), got "
                  f"{info['graphs']} and {info['graph_breaks']}", flush=True)
        t, tc = alone[name], contended.get(name)
        rows.append({"backend": name, "step_ms": t * 1e3, "samples_per_s": args.batch / t, **info,
                     **({"contended_step_ms": tc * 1e3, "contended_ratio": tc / t} if tc else {})})
    reset_compiled()
    base = next((r for r in rows if r["backend"] == "reference"), None)
    comp = next((r for r in rows if r["backend"] == "compile"), None)
    cont = f" beside {args.contend} busy | x alone |" if args.contend else ""
    print("| backend | step ms | samples/s | vs reference | vs compile | first step s |" + cont)
    print("|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.contend else ""))
    for r in rows:
        vs = [f"{r['samples_per_s'] / b['samples_per_s']:.2f}x" if b else "" for b in (base, comp)]
        print(f"| {r['backend']} | {r['step_ms']:.1f} | {r['samples_per_s']:,.0f} | {vs[0]} | {vs[1]} "
              f"| {r['first_step_s']:.1f} |" + (f" {r['contended_step_ms']:.1f} | {r['contended_ratio']:.2f}x |"
                                              if args.contend else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
