"""bench/gpu_check.sh: its syntax, and its CPU dry run of a few stages (the summary and JSON it
leaves). The full dry run (`bench/gpu_check.sh --dry-run`) takes minutes on a small CPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


def test_syntax():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.timeout(300)
def test_dry_run_stages(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_STAGES="env fps_bf16")
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path)], env=env, capture_output=True, text=True,
                       timeout=280)
    summary = (tmp_path / "summary.txt").read_text()
    stages = {line.split()[0]: line.split()[1] for line in summary.splitlines()}
    assert list(stages) == ["env", "build", "tests_cuda", "tests_triton", "sample_gpu", "memcheck", "racecheck",
                            "fps_fp32", "fps_bf16", "table6", "train", "fps_compile"], summary
    assert stages["env"] == "rc=0" and stages["fps_bf16"] == "rc=0", summary + r.stdout
    assert stages["memcheck"] == "rc=skipped" and stages["tests_cuda"] == "rc=skipped"
    assert (tmp_path / "fps_bf16.json").stat().st_size > 0 and (tmp_path / "env.log").exists()
    assert r.returncode == 0, r.stdout + r.stderr
