"""No code built for an instruction set runs on a CPU that lacks it.

The CPU kernels' inner loops are compiled for the baseline, AVX2 and AVX-512 (csrc/cpu/) and
chosen at run time. Two guards, both of which run on any x86-64 machine (CI's may have AVX-512, so
neither depends on this CPU lacking an instruction set):

- dynamic: capped to a narrower set (`set_cpu_isa_limit`, the machine then behaves as an AVX2-only
  or a baseline CPU), asking for a wider set is refused and its dispatch table is never built (the
  factories are compiled for their set: calling one is already running its instructions);
- static: in the built extension, every function whose machine code holds a VEX- or EVEX-encoded
  instruction belongs to that instruction set's namespace or factory (an inline function of a shared
  header compiled under a target pragma would otherwise be the copy the linker keeps for everyone).
"""
from __future__ import annotations

import collections
import os
import shutil
import subprocess

import pytest

from tests.helpers import skip_unless_backend
from tests.ops.test_mgcn import check_backend

ORDER = ["base", "avx2", "avx512"]


def _ext():
    skip_unless_backend("cpu")
    from diffupose.ops.backend import extension

    return extension()


@pytest.fixture
def ext():
    C = _ext()
    best = C.cpu_isa()
    yield C
    # back to the run's cap (DIFFUPOSE_CPU_ISA_MAX, as .ci/run sets for its AVX2 pass) or the hardware's best
    assert C.set_cpu_isa_limit(os.environ.get("DIFFUPOSE_CPU_ISA_MAX", "avx512"))
    assert C.cpu_isa() == best


@pytest.mark.parametrize("limit", ["base", "avx2"])
def test_capped_cpu_never_builds_wider_tables(ext, limit):
    assert ext.set_cpu_isa_limit(limit)
    have = ext.cpu_isa()
    assert ORDER.index(have) <= ORDER.index(limit)
    before = ext.cpu_isa_factory_calls()
    for wider in ORDER[ORDER.index(have) + 1:]:
        assert not ext.set_cpu_isa(wider), f"{wider} accepted on a CPU capped at {limit}"
    after = ext.cpu_isa_factory_calls()
    for i in range(ORDER.index(have) + 1, len(ORDER)):
        assert after[i] == before[i], f"the {ORDER[i]} dispatch table was built on a CPU capped at {limit}"
    assert ext.cpu_isa() == have
    check_backend("cpu", 5, 17, 24, 40, "silu", 1, True, __import__("torch").float32)  # still computes right


def test_unknown_isa_refused(ext):
    before = ext.cpu_isa_factory_calls()
    assert not ext.set_cpu_isa("sse9")
    assert not ext.set_cpu_isa_limit("sse9")
    assert ext.cpu_isa_factory_calls() == before


# -- static: where wide instructions live in the built extension ---------------------------------
_LEGACY_PREFIXES = {"66", "67", "f2", "f3", "2e", "36", "3e", "26", "64", "65", "f0"}


def wide_functions(so_path: str) -> dict[str, set[str]]:
    """Function name -> {'vex', 'evex'} for every function of the shared object holding such an
    instruction. In 64-bit code an instruction whose first byte after legacy prefixes is 0xC4/0xC5
    is VEX-encoded (AVX/AVX2/FMA) and 0x62 is EVEX (AVX-512): LES, LDS and BOUND do not exist there."""
    dis = subprocess.run(["objdump", "-d", "-w", "-C", "--no-addresses", so_path], check=True,
                         capture_output=True, text=True).stdout
    found: dict[str, set[str]] = collections.defaultdict(set)
    cur = None
    for line in dis.splitlines():
        if line.startswith("<") and line.endswith(">:"):
            cur = line[1:-2]
            continue
        if cur is None or not line.startswith("\t"):
            continue
        cols = line.split("\t")
        if len(cols) < 3:
            continue
        code = [b for b in cols[1].split()]
        i = 0
        while i < len(code) and code[i] in _LEGACY_PREFIXES:
            i += 1
        if i < len(code) and code[i] in ("c4", "c5"):
            found[cur].add("vex")
        elif i < len(code) and code[i] == "62":
            found[cur].add("evex")
    return found


def _allowed(name: str, kinds: set[str]) -> bool:
    in_avx512 = "::avx512::" in name or "_avx512(" in name
    in_avx2 = "::avx2::" in name or "_avx2(" in name
    return in_avx512 if "evex" in kinds else (in_avx512 or in_avx2)


def test_wide_instructions_only_in_their_namespaces():
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) not installed")
    import diffupose._C as C

    found = wide_functions(C.__file__)
    assert found, "no AVX code found at all: the scan itself is broken (the avx2/avx512 loops must show)"
    assert any("avx512" in f for f, k in found.items() if "evex" in k), "the AVX-512 loops hold no EVEX code?"
    leaks = sorted(f"{f} ({', '.join(sorted(k))})" for f, k in found.items() if not _allowed(f, k))
    assert not leaks, "code built for AVX2/AVX-512 outside its namespace (would run unchecked): " + "; ".join(leaks)


def test_scan_detects_a_leak(tmp_path):
    """The scan itself: a tiny object with an AVX-512 function outside any ISA namespace is flagged."""
    if shutil.which("objdump") is None or shutil.which("c++") is None:
        pytest.skip("objdump or a C++ compiler not installed")
    src = tmp_path / "leak.cpp"
    src.write_text("#include <immintrin.h>\n"
                   '__attribute__((target("avx512f"))) void leaky(float* x) {\n'
                   "  _mm512_storeu_ps(x, _mm512_mul_ps(_mm512_loadu_ps(x), _mm512_set1_ps(2.0f)));\n}\n")
    obj = tmp_path / "leak.o"
    subprocess.run(["c++", "-O3", "-c", str(src), "-o", str(obj)], check=True)  # compiled, never run
    found = wide_functions(str(obj))
    assert "evex" in found.get("leaky(float*)", set())
    assert not _allowed("leaky(float*)", found["leaky(float*)"])
