"""What every Triton launcher here shares: the device guard of a launch."""
from __future__ import annotations

import contextlib

import torch


def device_guard(t: torch.Tensor):
    """Make t's GPU the current device for a launch: Triton launches on the current device's
    current stream, so without it a tensor on cuda:1 would be worked on from cuda:0's stream (and
    missed by a CUDA graph being captured on cuda:1's). A no-op for CPU tensors (interpreter)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()
