"""The fused ops, each in its own module with its reference, fake kernel and autograd wiring."""
from .backend import (BACKENDS, BackendUnavailable, get_backend, has_cuda_kernels, has_extension, has_triton,
                      resolve, set_backend, use_backend)
from .mgcn import ACTIVATIONS, mgcn, mgcn_ref
from .mgcn_norm import mgcn_norm, mgcn_norm_ref
from .norm_act import norm_act, norm_act_ref
from .philox import philox_normal_ref
from .sample import fused_sampler_available, sample, sample_ref
from .sampler_step import NOISE_COEFS, StepCoefs, sampler_step, sampler_step_ref

__all__ = [
    "ACTIVATIONS", "BACKENDS", "BackendUnavailable", "NOISE_COEFS", "StepCoefs", "fused_sampler_available",
    "get_backend", "has_cuda_kernels", "has_extension", "has_triton", "mgcn", "mgcn_norm", "mgcn_norm_ref", "mgcn_ref", "norm_act", "norm_act_ref", "philox_normal_ref",
    "resolve", "sample", "sample_ref", "sampler_step", "sampler_step_ref", "set_backend", "use_backend",
]
