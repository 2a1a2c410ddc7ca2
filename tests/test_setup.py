"""setup.py's build plan: the CUDA kernels are compiled by default only where a GPU is visible
(torch sees one, or nvidia-smi lists one), and the plan is said before the compiler starts.
`setup.py --name` runs the detection and prints the plan without building anything."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
N_CUDA_FILES = len(list((ROOT / "csrc" / "cuda").glob("*.cu")))

pytestmark = pytest.mark.skipif(torch.version.cuda is None or torch.cuda.is_available(),
                                reason="needs a CUDA build of torch on a machine where torch sees no GPU")


def _plan(tmp_path, smi_output, smi_status=0, **env):
    """setup.py's output with a fake toolkit (bin/nvcc) and a fake nvidia-smi printing smi_output."""
    cuda = tmp_path / "cuda"
    (cuda / "bin").mkdir(parents=True)
    (cuda / "bin" / "nvcc").write_text("#!/bin/sh\nexit 0\n")
    (cuda / "bin" / "nvcc").chmod(0o755)
    tools = tmp_path / "tools"
    tools.mkdir()
    smi = tools / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '%s\\n' '{smi_output}'\nexit {smi_status}\n")
    smi.chmod(0o755)
    full_env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "CUDA_HOME": str(cuda),
                "DIFFUPOSE_SKIP_CUDA": "", "DIFFUPOSE_FORCE_CUDA": "", **env}
    res = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, env=full_env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    # where the CUDA kernels are built, _add_cuda_library_headers may also say where cuBLAS's headers
    # were found (the fake toolkit has none): not part of the plan
    return [line for line in res.stdout.splitlines()
            if line.startswith("diffupose:") and not line.startswith("diffupose: cuBLAS/cuSPARSE headers from")]


def test_a_listed_gpu_builds_the_cuda_kernels(tmp_path):
    plan = _plan(tmp_path, "GPU 0: NVIDIA H200 (UUID: GPU-0f3c)")
    assert len(plan) == 1 and "the C++ CPU kernels (" in plan[0]
    assert f"and the CUDA kernels ({N_CUDA_FILES} files" in plan[0]
    assert "the first time" in plan[0]


@pytest.mark.parametrize("smi_output,status", [("No devices were found", 6), ("", 0)])
def test_no_gpu_skips_them_and_says_so(tmp_path, smi_output, status):
    plan = _plan(tmp_path, smi_output, status)
    assert plan[0].startswith("diffupose: no GPU visible") and "DIFFUPOSE_FORCE_CUDA=1" in plan[0]
    assert "CUDA kernels (" not in plan[1]


def test_force_cuda_builds_them_without_a_gpu(tmp_path):
    plan = _plan(tmp_path, "No devices were found", 6, DIFFUPOSE_FORCE_CUDA="1")
    assert len(plan) == 1 and f"and the CUDA kernels ({N_CUDA_FILES} files" in plan[0]
