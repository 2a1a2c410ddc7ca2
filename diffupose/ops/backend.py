"""Which implementation of the fused ops runs: reference | cpu | cuda | triton | auto.

- reference: plain PyTorch (the ground truth, differentiable by autograd, any device)
- cpu:       the C++ kernels of diffupose._C on CPU tensors
- cuda:      the CUDA C++ kernels of diffupose._C on CUDA tensors
- triton:    the Triton kernels (CUDA tensors; CPU tensors only under TRITON_INTERPRET=1)
- auto:      the best available for the tensors' device: cuda > triton > reference on a GPU,
             cpu > reference on the CPU

Choose with `set_backend(name)`, the context manager `use_backend(name)`, or the environment
variable DIFFUPOSE_BACKEND. The model calls the same ops in training and in sampling, so one
switch moves both.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading

import torch

BACKENDS = ("auto", "reference", "cpu", "cuda", "triton")

_state = threading.local()


class BackendUnavailable(RuntimeError):
    """A fused backend was asked for where it cannot run; the message names the fix."""


def _default() -> str:
    name = os.environ.get("DIFFUPOSE_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"DIFFUPOSE_BACKEND={name!r}; expected one of {', '.join(BACKENDS)}")
    return name


def get_backend() -> str:
    return getattr(_state, "name", None) or _default()


def set_backend(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    _state.name = name


@contextlib.contextmanager
def use_backend(name: str):
    old = getattr(_state, "name", None)
    set_backend(name)
    try:
        yield
    finally:
        _state.name = old


# ---------------------------------------------------------------------------------------------
# availability
# ---------------------------------------------------------------------------------------------
_ext = None
_ext_error: str | None = None


def extension():
    """diffupose._C, imported once; raises BackendUnavailable with the fix if it is missing."""
    global _ext, _ext_error
    if _ext is None and _ext_error is None:
        try:
            _ext = importlib.import_module("diffupose._C")
        except ImportError as e:  # not built, or built against another torch
            _ext_error = str(e)
    if _ext is None:
        raise BackendUnavailable(
            "the C++/CUDA kernels (diffupose._C) are not available: "
            f"{_ext_error}. Build them with `pip install --no-build-isolation -e .` in the repository "
            "(with torch installed first), or use backend 'reference' or 'triton'."
        )
    return _ext


def has_extension() -> bool:
    try:
        extension()
        return True
    except BackendUnavailable:
        return False


def has_cuda_kernels() -> bool:
    return has_extension() and bool(extension().with_cuda())


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def has_triton() -> bool:
    try:
        importlib.import_module("triton")
        return True
    except ImportError:
        return False


def resolve(backend: str | None, device: torch.device) -> str:
    """The concrete backend for tensors on `device`; raises BackendUnavailable if it cannot run."""
    name = backend or get_backend()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    on_cuda = device.type == "cuda"
    if name == "auto":
        if on_cuda:
            if has_cuda_kernels():
                return "cuda"
            return "triton" if has_triton() else "reference"
        return "cpu" if has_extension() else "reference"
    if name == "cpu":
        if on_cuda:
            raise BackendUnavailable("backend 'cpu' was asked for CUDA tensors; use 'cuda', 'triton' or 'auto'")
        extension()
    elif name == "cuda":
        if not on_cuda:
            raise BackendUnavailable(f"backend 'cuda' was asked for {device.type} tensors; use 'cpu' or 'auto'")
        if not has_cuda_kernels():
            raise BackendUnavailable(
                "backend 'cuda': diffupose._C was built without CUDA kernels. Rebuild on a machine with nvcc "
                "and a CUDA build of torch: `DIFFUPOSE_FORCE_CUDA=1 pip install --no-build-isolation -e .`"
            )
    elif name == "triton":
        if not has_triton():
            raise BackendUnavailable("backend 'triton': triton is not installed (`pip install triton`)")
        if not on_cuda and not triton_interpreting():
            raise BackendUnavailable(
                "backend 'triton' on CPU tensors needs the Triton interpreter: set TRITON_INTERPRET=1 "
                "before triton is imported, or use backend 'cpu'"
            )
    return name
