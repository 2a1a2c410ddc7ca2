#!/usr/bin/env bash
# One entry point for set-up and the common jobs; every command is idempotent.
#
#   ./run.sh setup     create/refresh the virtual environment, build diffupose._C (incremental;
#                      the CUDA kernels only where a GPU is visible, or with DIFFUPOSE_FORCE_CUDA=1)
#   ./run.sh test      setup, then the test suite (Triton kernels under the interpreter without a GPU)
#   ./run.sh demo      setup, then the main job on the embedded default data
#   ./run.sh py ARGS   setup, then python ARGS inside the environment
#
# DIFFUPOSE_VENV     where the environment lives (default: .venv in the repository)
# DIFFUPOSE_PYTHON   interpreter used to create it (default: python3; needs 3.10+)
# DIFFUPOSE_TORCH    pip requirement for torch (default: "torch>=2.4,<2.15")
# and the build switches of setup.py (DIFFUPOSE_SKIP_CUDA, DIFFUPOSE_FORCE_CUDA, TORCH_CUDA_ARCH_LIST).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${DIFFUPOSE_VENV:-$ROOT/.venv}"
PY_BOOT="${DIFFUPOSE_PYTHON:-python3}"
TORCH_REQ="${DIFFUPOSE_TORCH:-torch>=2.4,<2.15}"
PY="$VENV/bin/python"
export MAX_JOBS="${MAX_JOBS:-2}"

log() { printf '[run.sh] %s\n' "$*" >&2; }

setup() {
  if ! "$PY_BOOT" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    log "Python 3.10+ is needed; set DIFFUPOSE_PYTHON to one"; exit 1
  fi
  if [ ! -x "$PY" ]; then
    log "creating the environment in $VENV"
    "$PY_BOOT" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip setuptools wheel
  fi
  if ! "$PY" -c 'import torch' 2>/dev/null; then
    log "installing $TORCH_REQ (once)"
    "$PY" -m pip install -q "$TORCH_REQ"
  fi
  # Dependencies and the editable package (pure Python part); cheap when nothing changed.
  local stamp="$VENV/.diffupose-setup-stamp" want
  want="$(cat "$ROOT/setup.py" "$ROOT/pyproject.toml" | sha1sum | cut -c1-16)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing diffupose and its dependencies"
    DIFFUPOSE_SKIP_EXT=1 "$PY" -m pip install -q --no-build-isolation -e "$ROOT[dev,triton]"
    echo "$want" > "$stamp"
  fi
  # The extension, built in place and incrementally (ninja, build/ in the repository).
  if [ "${DIFFUPOSE_SKIP_EXT:-0}" != "1" ]; then
    # A missing CUDA_HOME is found from nvcc by setup.py (wrapper scripts followed). setup.py says
    # what it compiles and about how long a first build takes; its lines are shown as they come,
    # the compiler's go to build/ext.log. Only what changed is recompiled (seconds when nothing did).
    log "building diffupose._C in place (incremental; compiler output in build/ext.log)"
    local t0=$SECONDS
    (cd "$ROOT" && "$PY" setup.py -q build_ext --inplace 2>&1 | tee "$ROOT/build/ext.log" |
      while IFS= read -r line; do case "$line" in "diffupose: "*) log "${line#diffupose: }" ;; esac; done) || {
      tail -n 40 "$ROOT/build/ext.log" >&2; log "extension build failed; full log in build/ext.log"; exit 1; }
    "$PY" -c 'import diffupose._C as C, sys; print("[run.sh] diffupose._C ready in %s s (CUDA kernels: %s)"
              % (sys.argv[1], C.with_cuda()))' "$((SECONDS - t0))" >&2
  fi
}

cmd="${1:-help}"
shift || true
mkdir -p "$ROOT/build"
case "$cmd" in
  setup) setup ;;
  test)
    setup
    if ! "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
      export TRITON_INTERPRET=1  # Triton kernels on CPU tensors
    fi
    cd "$ROOT" && exec "$PY" -m pytest tests "$@" ;;
  demo)
    setup
    cd "$ROOT" && exec "$PY" -m diffupose demo "$@" ;;
  py)
    setup
    cd "$ROOT" && exec "$PY" "$@" ;;
  *)
    sed -n '2,13p' "$0"; [ "$cmd" = help ] || exit 2 ;;
esac
