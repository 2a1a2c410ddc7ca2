#!/usr/bin/env bash
# The first-GPU proof of the CUDA and Triton paths, in one command and at most ~9 minutes:
#
#   bench/gpu_check.sh [OUT_DIR]            # on a fresh H100/H200 machine (default OUT_DIR: $OUT or ./gpu_check_out)
#   bench/gpu_check.sh --dry-run [OUT_DIR]  # the same stages on the CPU at tiny sizes (GPU-only ones say skipped)
#
# Stages, each under its own `timeout` (a failing or hanging stage leaves the others' results):
#   env         nvidia-smi, versions (python, torch, triton, nvcc, ncu, compute-sanitizer), needed modules
#   build       venv (--system-site-packages: nothing is downloaded), extension for sm_90 only
#               (TORCH_CUDA_ARCH_LIST=9.0, MAX_JOBS=16), `pip install --no-build-isolation --no-deps -e .`
#   tests_cuda  the CUDA-op, GPU-reference and GPU-only tests (ops, engine, capture)
#   tests_triton the Triton tests (compiled)
#   sample_gpu  the whole-sampler op on the GPU (issue 12): tests/ops/test_sample_gpu.py (CUDA and
#               Triton against sample_ref and the CPU op), compute-sanitizer memcheck of one CUDA case,
#               then bench/fps.py per-layer ops vs whole sampler vs torch.compile (fp32, CUDA backend),
#               the tensor-core path (bf16) and the Triton whole sampler (fps_sample_*.json)
#   memcheck    compute-sanitizer memcheck on the CUDA op tests (small sizes)
#   racecheck   compute-sanitizer racecheck on the same
#   fps_fp32    bench/fps.py: eager, fused, graph; batch 1 / 1024 / 65536; N 1 and 10 (--no-compile)
#   fps_bf16    the same at bf16
#   table6      bench/fps.py --table6
#   train       bench/train_throughput.py
#   fps_compile bench/fps.py's compile path (with the others) at batch 1024, N 10
# Everything lands in OUT_DIR: one log per stage, the JSON of the benchmarks, and summary.txt with
# each stage's rc and seconds (rc 124: the stage ran out of its time). GPU_CHECK_STAGES="env tests"
# runs only those stages; GPU_CHECK_BUDGET (default 540 s) caps all stages together.
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
DEST=${1:-${OUT:-$REPO/gpu_check_out}}
mkdir -p "$DEST" || { echo "gpu_check: cannot create $DEST" >&2; exit 2; }
DEST=$(cd "$DEST" && pwd)
SUMMARY=$DEST/summary.txt
: > "$SUMMARY"
TOTAL_BUDGET=${GPU_CHECK_BUDGET:-540}   # seconds for all stages together
START=$(date +%s)

note() { echo "[gpu_check] $*" | tee -a "$DEST/gpu_check.log"; }

# run_stage NAME SECONDS COMMAND...: runs COMMAND with its output in NAME.log, at most SECONDS
# (and never past the total budget), and records "NAME rc seconds" in the summary.
run_stage() {
  local name=$1 limit=$2; shift 2
  if [ -n "${GPU_CHECK_STAGES:-}" ] && [[ " $GPU_CHECK_STAGES " != *" $name "* ]]; then
    skip_stage "$name" "not in GPU_CHECK_STAGES"
    return 0
  fi
  local left=$((TOTAL_BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 5 ]; then
    printf '%-12s rc=skipped  %4ss  (total budget of %ss spent)\n' "$name" 0 "$TOTAL_BUDGET" >> "$SUMMARY"
    note "$name: skipped, the total budget is spent"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  note "$name: up to ${limit}s"
  local t0=$(date +%s)
  if [ "$(type -t "$1")" = function ]; then  # a stage written as a shell function runs in its own bash
    timeout --kill-after=10 "$limit" bash -c "$(declare -f "$1"); $1" > "$DEST/$name.log" 2>&1
  else
    timeout --kill-after=10 "$limit" "$@" > "$DEST/$name.log" 2>&1
  fi
  local rc=$?
  local dt=$(($(date +%s) - t0))
  printf '%-12s rc=%-7s %4ss  %s\n' "$name" "$rc" "$dt" "$name.log" >> "$SUMMARY"
  note "$name: rc $rc in ${dt}s"
  return 0
}

skip_stage() {
  printf '%-12s rc=skipped  %4ss  (%s)\n' "$1" 0 "$2" >> "$SUMMARY"
  note "$1: skipped ($2)"
}

# ---------------------------------------------------------------------------------------------
# python: a venv over the system site-packages on the GPU machine; the current one for a dry run
# ---------------------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  PY=${PYTHON:-$(command -v python3)}
  [ -x "$REPO/.venv/bin/python" ] && PY=${PYTHON:-$REPO/.venv/bin/python}
  export TRITON_INTERPRET=1 DIFFUPOSE_GPU_CHECK_DRY=1
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
  VENV=${GPU_CHECK_VENV:-/tmp/diffupose-gpu-venv}
  SYS_PY=${PYTHON:-$(command -v python3)}
  if [ ! -x "$VENV/bin/python" ]; then
    "$SYS_PY" -m venv --system-site-packages "$VENV" || { note "cannot create a venv at $VENV; using $SYS_PY"; VENV=; }
  fi
  PY=${VENV:+$VENV/bin/python}
  PY=${PY:-$SYS_PY}
  unset TRITON_INTERPRET
fi
export PY REPO DEST
note "python: $PY; out: $DEST; dry run: $DRY"

env_report() {
  echo "== date"; date -u
  echo "== nvidia-smi"; nvidia-smi || echo "nvidia-smi: not available"
  echo "== nvcc"; nvcc --version || echo "nvcc: not found"
  echo "== ncu"; ncu --version || echo "ncu: not found"
  echo "== compute-sanitizer"; compute-sanitizer --version || echo "compute-sanitizer: not found"
  echo "== python and packages"
  "$PY" - <<'EOF'
import importlib, platform, sys
print("python", sys.version.split()[0], platform.machine())
missing = []
for name in ("torch", "triton", "numpy", "tqdm", "safetensors", "pytest", "matplotlib"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')}")
    except ImportError as e:
        missing.append(name)
        print(f"{name}: MISSING ({e})")
try:
    import torch
    print("torch.version.cuda", torch.version.cuda, "| cuda available", torch.cuda.is_available(),
          "| devices", torch.cuda.device_count())
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"  cuda:{i} {p.name} sm_{p.major}{p.minor} {p.total_memory / 2**30:.0f} GiB")
except Exception as e:  # the report goes on
    print("torch cuda query failed:", e)
if missing:
    print("MISSING modules (nothing can be downloaded here):", ", ".join(missing))
    sys.exit(1)
EOF
}
run_stage env 60 env_report

# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
build() {
  # torch's CUDA headers include cusparse.h / cublas_v2.h: where the toolkit lacks them, use the
  # copies of torch's pip CUDA wheels
  local extra
  extra=$("$PY" - <<'EOF'
import glob, os, site
dirs = []
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    dirs += sorted(glob.glob(os.path.join(sp, "nvidia", "*", "include")))
print(":".join(d for d in dirs if os.path.isdir(d)))
EOF
)
  [ -n "$extra" ] && export CPATH="$extra${CPATH:+:$CPATH}"
  echo "CPATH=${CPATH:-}"
  DIFFUPOSE_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 "$PY" setup.py -q build_ext --inplace || return $?
  DIFFUPOSE_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 \
    "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . || return $?
  "$PY" -c 'import diffupose.ops as o; print("extension:", o.has_extension(), "cuda kernels:", o.has_cuda_kernels())'
  "$PY" -c 'import diffupose.ops as o, sys; sys.exit(0 if o.has_cuda_kernels() else 1)'
}
if [ "$DRY" = 1 ]; then
  run_stage build 60 "$PY" -c 'import diffupose.ops as o; print("extension:", o.has_extension(), "cuda kernels:", o.has_cuda_kernels())'
else
  run_stage build 240 build
fi

# ---------------------------------------------------------------------------------------------
# tests and sanitizers
# ---------------------------------------------------------------------------------------------
# -v: one line per test as it finishes, so a stage cut off by its timeout still says how far it got
PYTEST=("$PY" -m pytest -v -p no:cacheprovider -o addopts= -rfEs --durations=10)
export DRY

# The whole sampler as one op on the GPU (CUDA C++ and Triton; written without a GPU). Each step
# says its own rc; the stage's rc is the first failure. On the dry run: the Triton tests under the
# interpreter and the CPU op's fps rows at a tiny size.
sample_gpu() {
  local rc=0 r
  local PYT=("$PY" -m pytest -v -p no:cacheprovider -o addopts= -rfEs --durations=10)
  local FPS=(--ddim-steps 5 --hyp 1 10 --budget 20 --repeats 10 --warmup 2)
  if [ "$DRY" = 1 ]; then
    "${PYT[@]}" tests/ops/test_sample_gpu.py; r=$?; echo "== tests rc $r"; [ $rc = 0 ] && rc=$r
    "$PY" bench/fps.py --device cpu --backend cpu --d-model 16 --blocks 1 --repeats 1 --warmup 1 --ddim-steps 1 \
      --batch 1 --hyp 1 --budget 5 --no-compile --json "$DEST/fps_sample_cuda.json"; r=$?
    echo "== fps rc $r"; [ $rc = 0 ] && rc=$r
    return $rc
  fi
  "${PYT[@]}" tests/ops/test_sample_gpu.py tests/ops/test_sample.py; r=$?; echo "== tests rc $r"; [ $rc = 0 ] && rc=$r
  if command -v compute-sanitizer > /dev/null; then
    compute-sanitizer --tool memcheck --error-exitcode 3 "${PYT[@]}" tests/ops/test_sample_gpu.py \
      -k "cuda_matches and ddim5 and h36m17-10-3" ; r=$?; echo "== memcheck rc $r"; [ $rc = 0 ] && rc=$r
  fi
  # per-layer ops vs the whole sampler (CUDA kernel) vs torch.compile, fp32 (compile: batch 1 only)
  "$PY" bench/fps.py "${FPS[@]}" --batch 1 --dtype fp32 --backend cuda --json "$DEST/fps_sample_cuda.json"; r=$?
  echo "== fps fp32 cuda rc $r"; [ $rc = 0 ] && rc=$r
  "$PY" bench/fps.py "${FPS[@]}" --batch 1024 --dtype fp32 --backend cuda --no-compile \
    --json "$DEST/fps_sample_cuda_1024.json"; r=$?; echo "== fps fp32 cuda 1024 rc $r"; [ $rc = 0 ] && rc=$r
  # the tensor-core path: bf16 activations -> fp16 wmma GEMMs in the whole sampler
  "$PY" bench/fps.py "${FPS[@]}" --batch 1 1024 --dtype bf16 --backend cuda --no-compile \
    --json "$DEST/fps_sample_cuda_bf16.json"; r=$?; echo "== fps bf16 cuda rc $r"; [ $rc = 0 ] && rc=$r
  # the Triton whole sampler (the switch chooses it for ops.sample, Lifter passes no backend to it)
  DIFFUPOSE_BACKEND=triton "$PY" bench/fps.py "${FPS[@]}" --batch 1 1024 --dtype fp32 --backend triton --no-compile \
    --json "$DEST/fps_sample_triton.json"; r=$?; echo "== fps fp32 triton rc $r"; [ $rc = 0 ] && rc=$r
  return $rc
}
if [ "$DRY" = 1 ]; then
  run_stage tests_cuda 120 "${PYTEST[@]}" tests/test_capture.py -k "frame_bucket or checker or flip_pose"
  run_stage tests_triton 120 "${PYTEST[@]}" tests/test_capture.py -k "triton_launchers"
  run_stage sample_gpu 120 sample_gpu
  skip_stage memcheck "dry run: no GPU"
  skip_stage racecheck "dry run: no GPU"
else
  GPU_TESTS=(tests/ops tests/test_engine.py tests/test_capture.py)
  # the CUDA op, the reference on the GPU and the GPU-only tests; then the Triton ones (they compile)
  run_stage tests_cuda 70 "${PYTEST[@]}" "${GPU_TESTS[@]}" -k "not triton and not cpu"
  run_stage tests_triton 100 "${PYTEST[@]}" "${GPU_TESTS[@]}" -k "triton"
  run_stage sample_gpu 150 sample_gpu
  SAN_TESTS=(tests/ops/test_mgcn.py tests/ops/test_sampler_step.py -k "cuda and (epilogues or matches_reference-False or empty)")
  if command -v compute-sanitizer > /dev/null; then
    run_stage memcheck 40 compute-sanitizer --tool memcheck --error-exitcode 3 "${PYTEST[@]}" "${SAN_TESTS[@]}"
    run_stage racecheck 40 compute-sanitizer --tool racecheck --error-exitcode 3 "${PYTEST[@]}" "${SAN_TESTS[@]}"
  else
    skip_stage memcheck "compute-sanitizer not found"
    skip_stage racecheck "compute-sanitizer not found"
  fi
fi

# ---------------------------------------------------------------------------------------------
# benchmarks. bench/fps.py's compile path autotunes (mode max-autotune) for every shape, minutes
# each: the sweeps leave it out (--no-compile), and the compiled path is measured with the others
# at the end (batch 1024, N 10; GEMM autotuning among ATen's kernels only), as time allows.
# ---------------------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
  TINY=(--device cpu --d-model 16 --blocks 1 --repeats 1 --warmup 1)
  run_stage fps_fp32 60 "$PY" bench/fps.py "${TINY[@]}" --ddim-steps 1 --batch 1 4 --hyp 1 2 --dtype fp32 --budget 5 \
    --no-compile --json "$DEST/fps_fp32.json"
  run_stage fps_bf16 60 "$PY" bench/fps.py "${TINY[@]}" --ddim-steps 1 --batch 1 --hyp 1 --dtype bf16 --budget 5 \
    --no-compile --json "$DEST/fps_bf16.json"
  run_stage table6 240 "$PY" bench/fps.py --table6 --device cpu --max-frames 2 --repeats 1 --warmup 1 --budget 5 \
    --json "$DEST/table6.json"
  run_stage train 60 "$PY" bench/train_throughput.py --device cpu --d-model 16 --blocks 1 --batch 8 --repeats 1 \
    --warmup 1 --no-compile --json "$DEST/train.json"
  run_stage fps_compile 120 "$PY" bench/fps.py "${TINY[@]}" --ddim-steps 1 --batch 2 --hyp 1 --dtype fp32 \
    --budget 5 --json "$DEST/fps_compile.json"
else
  SWEEP=(--ddim-steps 5 --batch 1 1024 65536 --hyp 1 10 --budget 10 --repeats 10 --warmup 2)
  run_stage fps_fp32 45 "$PY" bench/fps.py "${SWEEP[@]}" --no-compile --dtype fp32 \
    --json "$DEST/fps_fp32.json"
  run_stage fps_bf16 45 "$PY" bench/fps.py "${SWEEP[@]}" --no-compile --dtype bf16 \
    --json "$DEST/fps_bf16.json"
  run_stage table6 40 "$PY" bench/fps.py --table6 --max-frames 2000 --budget 10 --json "$DEST/table6.json"
  run_stage train 30 "$PY" bench/train_throughput.py --no-compile --json "$DEST/train.json"
  run_stage fps_compile 90 env TORCHINDUCTOR_MAX_AUTOTUNE_GEMM_BACKENDS=ATEN "$PY" bench/fps.py --ddim-steps 5 \
    --batch 1024 --hyp 10 --dtype fp32 --budget 10 --repeats 10 --warmup 2 --json "$DEST/fps_compile.json"
fi

note "done in $(($(date +%s) - START))s; summary:"
cat "$SUMMARY" | tee -a "$DEST/gpu_check.log"
# non-zero when a stage failed (skipped ones do not count)
! grep -v "rc=0 \|rc=skipped" "$SUMMARY" > /dev/null
