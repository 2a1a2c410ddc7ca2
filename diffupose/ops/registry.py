"""Registration helpers shared by every fused op: fake kernels and the autograd wiring.

An op has one schema per implementation family: the C++ ops (`diffupose::foo`, CPU and CUDA
kernels from diffupose._C, schema in csrc/ops.cpp) and the Triton ops (`diffupose::foo_triton`,
defined in Python). Both get the same fake kernel and the same autograd formula from here, so
torch.compile and CUDA graphs see every backend the same way.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import backend as _backend

_registered: set[str] = set()


def cpp_op(name: str):
    """torch.ops.diffupose.<name> from diffupose._C; BackendUnavailable (with the fix) if not built."""
    _backend.extension()
    op = getattr(torch.ops.diffupose, name, None)
    if op is None:  # an extension built from older sources than the Python package
        raise _backend.BackendUnavailable(
            f"diffupose._C has no op {name!r}: it was built from older sources; rebuild it (./run.sh setup, "
            "or pip install --no-build-isolation -e .)")
    return op


def register_once(key: str, fn: Callable[[], None]) -> None:
    """Run a registration once per process (register_fake / register_autograd raise on repeats)."""
    if key not in _registered:
        fn()
        _registered.add(key)


def wired_cpp_op(fwd: str, bwd: str, fwd_fake, bwd_fake, backward, setup_context):
    """torch.ops.diffupose.<fwd> (cpp_op) with, once per process, the fake kernels of the pair and
    the autograd formula of the forward registered: the C++ ops with one Python wiring each."""
    op = cpp_op(fwd)

    def wire() -> None:
        torch.library.register_fake(f"diffupose::{fwd}")(fwd_fake)
        torch.library.register_fake(f"diffupose::{bwd}")(bwd_fake)
        torch.library.register_autograd(f"diffupose::{fwd}", backward, setup_context=setup_context)

    register_once(fwd, wire)
    return op
