"""DiffuPose: multi-hypothesis 3D human pose lifting with a diffusion model on fused kernels.

`import diffupose` works without the compiled extension; the fused C++/CUDA ops then raise a
clear error naming the fix, and the reference and Triton backends still run.

    lifter = diffupose.load_lifter()          # the shipped checkpoint; diffupose.api for the rest
    result = lifter.lift("keypoints.json", image_size=(1920, 1080))   # result.pose3d [F, 17, 3] m
"""
__version__ = "0.1.0"

import os as _os
import sys as _sys

# OpenMP threads that wait for a descheduled sibling by spinning collapse on a shared CPU (a
# detector or a second job beside us): 40 training steps (d 128, batch 256, 2 threads on 2 cores)
# beside one busy process took 198 s with GNU OpenMP's default spin-wait and 11.6 s with
# OMP_WAIT_POLICY=PASSIVE (one thread: 14.9 s); docs/BENCHMARKS.md has the idle cost. The runtime
# reads the policy once, when torch loads it, so this works only if torch is not imported yet
# (diffupose's commands and scripts import diffupose first); a policy set by the user wins.
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .skeleton import H36M16, H36M17, HUMANEVA15, Skeleton, get_skeleton  # noqa: E402,F401
from .api import Lifted, LiftError, PoseLifter, load_lifter  # noqa: E402,F401
