"""Build diffupose and its extension diffupose._C.

The C++ (CPU) sources in csrc/*.cpp are always compiled; the CUDA sources in csrc/cuda/*.cu
are compiled when a CUDA build of torch and nvcc are present and a GPU is visible (torch sees one,
or `nvidia-smi -L` lists one): on a machine without a GPU they could not run, and compiling them
for three architectures is most of a first build's time (docs/DESIGN.md, "Building").

Environment switches:
  DIFFUPOSE_FORCE_CUDA=1   build the CUDA sources even if auto-detection says no (fails loudly
                           if torch is a CPU build or nvcc cannot be found); CI sets it wherever
                           nvcc exists, so the CUDA code cannot rot unseen
  DIFFUPOSE_SKIP_CUDA=1    never build the CUDA sources
  DIFFUPOSE_SKIP_EXT=1     install the pure-Python package only
  TORCH_CUDA_ARCH_LIST     target architectures (default "8.0;8.6;9.0": Ampere and Hopper)
  CUDA_HOME                toolkit root; found from nvcc (wrapper scripts followed) if unset
  MAX_JOBS                 parallel compile jobs (ninja)

Install with `pip install --no-build-isolation -e .` so that the extension is compiled against
the torch of the target environment (build isolation would fetch another torch).
"""
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;8.6;9.0"
FIRST_BUILD_CPU, FIRST_BUILD_CUDA = "2 min", "5 min"  # on 2 cores, MAX_JOBS=2 (docs/DESIGN.md, "Building")


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _real_nvcc(path):
    """Follow symlinks and the `exec /real/nvcc "$@"` wrapper scripts some machines install."""
    path = os.path.realpath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return path
    if head.startswith(b"#!"):
        m = re.search(rb"exec\s+\"?([^\s\"]+/nvcc)\"?", head)
        if m:
            return os.path.realpath(m.group(1).decode())
    return path


def _find_cuda_home():
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    if os.environ.get("CUDA_PATH"):
        return os.environ["CUDA_PATH"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        return os.path.dirname(os.path.dirname(_real_nvcc(nvcc)))
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    return None


def _add_cuda_library_headers(cuda_home):
    """The CUDA op calls cuBLAS (pinned fp32 GEMMs) and ATen's CUDA headers include cuSPARSE: a
    full toolkit has their headers, a minimal one (nvcc and the runtime only) does not, but torch's
    pip CUDA wheels ship them under site-packages/nvidia/*/include. Those go on CPATH, which the
    compilers search after every -I (so the toolkit's own headers still win where both exist)."""
    if os.path.exists(os.path.join(cuda_home, "include", "cublas_v2.h")):
        return
    import site

    roots = site.getsitepackages() + [site.getusersitepackages()]
    found = sorted({os.path.dirname(h) for r in roots for h in glob.glob(os.path.join(r, "nvidia", "*", "include",
                                                                                     "cublas_v2.h"))})
    if not found:
        print("diffupose: WARNING cublas_v2.h is in neither %s/include nor torch's nvidia packages; "
              "the CUDA build will fail (install the CUDA toolkit's cuBLAS headers)" % cuda_home, file=sys.stderr)
        return
    os.environ["CPATH"] = os.pathsep.join(found + [p for p in os.environ.get("CPATH", "").split(os.pathsep) if p])
    print("diffupose: cuBLAS/cuSPARSE headers from %s (CPATH)" % found[0])


def _gpu_visible(torch) -> bool:
    """A GPU the CUDA kernels could run on: torch sees one, or nvidia-smi lists one (a driver is
    there though this torch cannot use it now, e.g. inside a build container)."""
    try:
        if torch.cuda.is_available():
            return True
    except Exception:  # noqa: BLE001 - a broken driver is no GPU for this purpose
        pass
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        res = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0 and re.search(r"^GPU \d+:", res.stdout, re.M) is not None


def _extensions():
    if _flag("DIFFUPOSE_SKIP_EXT"):
        print("diffupose: DIFFUPOSE_SKIP_EXT=1, installing without diffupose._C")
        return [], {}
    # CUDA_HOME must be settled before torch.utils.cpp_extension reads it at import time.
    cuda_home = _find_cuda_home()
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home
    try:
        import torch
        from torch.utils import cpp_extension as ce
    except ImportError:
        print(
            "diffupose: WARNING torch is not importable at build time, so diffupose._C is not built.\n"
            "  Install torch first, then `pip install --no-build-isolation -e .`",
            file=sys.stderr,
        )
        return [], {}

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    have_nvcc = cuda_home is not None and os.path.exists(os.path.join(cuda_home, "bin", "nvcc"))
    if _flag("DIFFUPOSE_SKIP_CUDA"):
        with_cuda = False
    elif _flag("DIFFUPOSE_FORCE_CUDA"):
        if torch.version.cuda is None:
            raise RuntimeError("DIFFUPOSE_FORCE_CUDA=1 but torch %s is a CPU build" % torch.__version__)
        if not have_nvcc:
            raise RuntimeError("DIFFUPOSE_FORCE_CUDA=1 but nvcc was not found (set CUDA_HOME)")
        with_cuda = True
    else:
        with_cuda = torch.version.cuda is not None and have_nvcc and _gpu_visible(torch)
        if torch.version.cuda is not None and have_nvcc and not with_cuda:
            print("diffupose: no GPU visible, so the CUDA kernels are not compiled "
                  "(DIFFUPOSE_FORCE_CUDA=1 compiles them anyway)")
    # Said before the compiler starts: a first build is minutes of silence otherwise. Times measured
    # on 2 cores (MAX_JOBS=2); an unchanged build is only the check (seconds).
    cuda_part = ""
    if with_cuda:
        cuda_part = " and the CUDA kernels (%d files for the architectures %s, about %s more)" % (
            len(cuda_sources), os.environ.get("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST), FIRST_BUILD_CUDA)
    print("diffupose: building diffupose._C: the C++ CPU kernels (%d files, about %s the first time)%s; "
          "CUDA_HOME=%s" % (len(sources), FIRST_BUILD_CPU, cuda_part, cuda_home))

    # The C++ standard is chosen by torch (C++20 for torch >= 2.14). -fno-trapping-math lets gcc
    # if-convert float compares, without which the CPU kernels' clamp/select loops (silu's exp)
    # stay scalar; nothing here relies on floating-point exception flags.
    cxx = ["-O3", "-fopenmp", "-fno-trapping-math"]
    extra = {"cxx": cxx}
    include_dirs = [os.path.join(ROOT, "csrc")]
    if with_cuda:
        # Without a GPU torch cannot guess the architectures (and fails with an IndexError).
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
        extra["cxx"] = cxx + ["-DDIFFUPOSE_WITH_CUDA"]
        # No --use_fast_math: it turns philox.h's logf / cosf into __logf / __cosf, whose absolute
        # error near u = 1 is amplified by Box-Muller's sqrt(-2 log u), and the sampler's divisions
        # into approximate ones: the noise would no longer match the CPU's (tests/ops/test_sampler_step.py).
        extra["nvcc"] = ["-O3", "-DDIFFUPOSE_WITH_CUDA", "-lineinfo", "--expt-relaxed-constexpr"]
        _add_cuda_library_headers(cuda_home)
        ext = ce.CUDAExtension("diffupose._C", sources + cuda_sources, include_dirs=include_dirs,
                               extra_compile_args=extra, extra_link_args=["-fopenmp"])
    else:
        ext = ce.CppExtension("diffupose._C", sources, include_dirs=include_dirs,
                              extra_compile_args=extra, extra_link_args=["-fopenmp"])
    return [ext], {"build_ext": ce.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="diffupose",
    version="0.1.0",
    description="Multi-hypothesis 3D human pose lifting with diffusion models, on fused kernels",
    python_requires=">=3.10",
    # kernels/ (Triton) is the subpackage diffupose.kernels through the link diffupose/kernels.
    packages=["diffupose", "diffupose.ops", "diffupose.data", "diffupose.keypoints", "diffupose.kernels"],
    package_data={"diffupose": ["assets/*", "assets/**/*"]},
    install_requires=[
        "torch>=2.4,<2.15",
        "numpy>=1.24,<3",
        "tqdm>=4.60,<5",
        "safetensors>=0.4,<1",
        "matplotlib>=3.6,<4",
    ],
    extras_require={
        "triton": ["triton>=3.0,<4"],
        "video": ["imageio-ffmpeg>=0.4,<1"],  # an ffmpeg binary for `diffupose viz -o clip.mp4`
        "dev": ["pytest>=7,<10", "pytest-benchmark>=4,<6", "pytest-timeout>=2,<3"],
    },
    entry_points={"console_scripts": ["diffupose=diffupose.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
