"""diffupose sets OpenMP's spin count before torch loads the runtime, and leaves a user's choice alone."""
import os
import subprocess
import sys

import pytest

CODE = "import diffupose, os; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"


def _run(code, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    r = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.mark.parametrize("env, want", [({}, ["1000", "None"]), ({"GOMP_SPINCOUNT": "5"}, ["5", "None"]),
                                       ({"OMP_WAIT_POLICY": "ACTIVE"}, ["None", "ACTIVE"])])
def test_spin_count_default(env, want):
    assert _run(CODE, **env) == want


def test_too_late_once_torch_is_loaded():
    assert _run("import torch; " + CODE) == ["None", "None"]
