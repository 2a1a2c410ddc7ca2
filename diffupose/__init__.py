"""DiffuPose: multi-hypothesis 3D human pose lifting with a diffusion model on fused kernels.

`import diffupose` works without the compiled extension; the fused C++/CUDA ops then raise a
clear error naming the fix, and the reference and Triton backends still run.

    lifter = diffupose.load_lifter()          # the shipped checkpoint; diffupose.api for the rest
    result = lifter.lift("keypoints.json", image_size=(1920, 1080))   # result.pose3d [F, 17, 3] m
"""
__version__ = "0.1.0"

from .skeleton import H36M16, H36M17, HUMANEVA15, Skeleton, get_skeleton  # noqa: E402,F401
from .api import Lifted, LiftError, PoseLifter, load_lifter  # noqa: E402,F401
