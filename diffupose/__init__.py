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
# detector or a second job beside us). GNU OpenMP spins 300,000 times (milliseconds) before it
# sleeps, so on 2 cores beside one busy process a spinning thread holds the core its sibling
# needs: a training step (d 128, batch 256, 2 threads) took 15-17x its time alone. Sleeping at
# once (OMP_WAIT_POLICY=PASSIVE) cost 1.35-1.5x when the machine is idle; 1,000 spins (tens of
# microseconds) cost ~1.2x idle and 1.5-1.75x beside a busy process (docs/BENCHMARKS.md). On
# another VM (Zen 4) it cost MKL's 2-thread GEMMs 3x idle (10,000 spins: full speed, but 2.9-3.8x
# beside a busy process): the whole-sampler op, one region per call with its own barriers, does
# not depend on it; the per-layer and plain-PyTorch paths do (BENCHMARKS, "the spin count"). The
# runtime reads this once, when torch loads it, so it works only if torch is not imported yet
# (diffupose's commands and scripts import diffupose first); the user's own setting wins.
if "torch" not in _sys.modules and "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "1000")


def openmp_wait_policy() -> str:
    """How OpenMP threads wait, as the environment tells the runtime (for benchmark headers)."""
    policy = _os.environ.get("OMP_WAIT_POLICY")
    spins = _os.environ.get("GOMP_SPINCOUNT")
    return ", ".join(x for x in (policy and f"OMP_WAIT_POLICY={policy}", spins and f"GOMP_SPINCOUNT={spins}")
                     if x) or "the runtime's default (GNU: 300,000 spins, then sleep)"

from .skeleton import H36M16, H36M17, HUMANEVA15, Skeleton, get_skeleton  # noqa: E402,F401
from .api import Lifted, LiftError, PoseLifter, load_lifter  # noqa: E402,F401
