"""diffupose.ablations (train/ablations.py is its thin command line): the whole study at micro
size (--smoke: two tiny runs, two steps, 32 test
frames), its results.json, the report with every section and both plots, resuming (finished runs
skipped, a half-finished run continued), refusing a folder of other settings, and the plan of the
default study."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffupose import ablations as ab

ROOT = Path(__file__).resolve().parent.parent

RUNS = ("gcn-cosine-d16-gt-s0", "regressor-cosine-d16-gt-s0")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablations")
    argv = ["--smoke", "--out", str(out), "--device", "cpu"]
    assert ab.main(argv) == 0
    return out, argv


def test_smoke_results_json(smoke):
    out, _ = smoke
    res = json.loads((out / "results.json").read_text())
    for key in ("format", "command", "study", "machine", "timing", "test", "mean_pose", "runs"):
        assert key in res, key
    assert res["format"] == ab.FORMAT and "--smoke" in res["command"]
    assert res["study"]["seeds"] == [0] and res["test"]["frames"] == 32
    assert res["machine"]["cpu_count"] >= 1 and "step_s" in res["timing"]["measured"]["gcn-d16"]
    runs = {r["name"]: r for r in res["runs"]}
    assert set(runs) == set(RUNS)
    for r in runs.values():
        assert {"config", "seed", "params", "evals", "train_command", "train_seconds", "final_loss"} <= set(r)
        assert r["seed"] == 0 and r["params"] > 0 and r["checkpoint"]["step"] == 2
        assert r["train_command"].startswith("python train/h36m.py --dataset cmu")
        for ev in r["evals"].values():
            assert ev["mpjpe"] > 0 and ev["p_mpjpe"] > 0 and ev["fps"] > 0 and ev["frames"] == 32
    base = runs["gcn-cosine-d16-gt-s0"]["evals"]
    # N sweep (oracle only for N > 1, under its own keys) and sampler sweep on the baseline
    assert {"n1-ddim2", "n3-ddim2", "n1-ddim5", "n1-ddpm100"} == set(base)
    assert "oracle_mpjpe" in base["n3-ddim2"] and "oracle_mpjpe" not in base["n1-ddim2"]
    assert set(runs["regressor-cosine-d16-gt-s0"]["evals"]) == {"n1-regressor"}


def test_smoke_report_and_plots(smoke):
    out, _ = smoke
    text = (out / "RESULTS.md").read_text()
    for title in ab.SECTIONS:
        assert f"\n## {title}\n" in text, title
    assert "--smoke" in text and "cores" in text
    assert ab.READING_TODO in text and "oracle best-of-N (uses ground truth; not a prediction)" in text
    assert "| DDPM | 100 |" in text and "GCN regressor (deterministic)" in text
    for name in (ab.PLOT_HYP, ab.PLOT_SAMPLER):
        png = out / "img" / name
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
        assert f"(img/{name})" in text
    # the human reading survives a regeneration
    (out / "RESULTS.md").write_text(text.replace(ab.READING_TODO, "The GCN wins by 3 mm."))
    assert ab.main(["--report-only", "--out", str(out)]) == 0
    text = (out / "RESULTS.md").read_text()
    assert "The GCN wins by 3 mm." in text and ab.READING_TODO not in text


def test_rerun_skips_finished_runs(smoke, capsys):
    out, argv = smoke
    before = {r: (out / r / "train_state.pt").stat().st_mtime_ns for r in RUNS}
    capsys.readouterr()
    assert ab.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("trained (skip)") == 2 and " eval " not in printed
    assert before == {r: (out / r / "train_state.pt").stat().st_mtime_ns for r in RUNS}


def test_folder_of_other_settings_is_refused(smoke, capsys):
    out, argv = smoke
    assert ab.main([*argv, "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "epochs 1 (asked: 3)" in err


def test_half_finished_run_resumes(tmp_path, capsys):
    from diffupose.recipes import main as train_main

    out = tmp_path / "abl"
    args = ab.build_parser().parse_args(["--smoke", "--out", str(out), "--device", "cpu", "--rows"])
    study = ab.study_from_args(args)
    (run,) = study.runs()  # --rows with nothing: the baseline only
    d = ab.run_dir(study, run)
    argv = study.train_argv(run, d)
    argv[argv.index("--max-steps") + 1] = "1"  # stopped half-way
    assert train_main([*argv, "--no-progress"]) == 0
    assert not ab.is_finished(study, d)
    capsys.readouterr()
    assert ab.main(["--smoke", "--out", str(out), "--device", "cpu", "--rows"]) == 0
    assert "resume at step 1" in capsys.readouterr().out
    assert "resumed from" in (d / "train.log").read_text() and ab.checkpoint_progress(d)["step"] == 2


def test_default_plan_shares_the_baseline():
    args = ab.build_parser().parse_args(["--device", "cpu"])
    study = ab.study_from_args(args)
    runs = study.runs()
    names = [r.name for r in runs]
    assert len(names) == len(set(names)) == 16  # 8 configurations x 2 seeds; N and sampler rows train nothing
    assert runs[0].name == "gcn-cosine-d128-gt-s0" and all(r.seed == 0 for r in runs[:8])
    base = study.evals(runs[0])
    assert (20, 5, "ddim") in base and (1, 100, "ddpm") in base and (1, 2, "ddim") in base
    det = study.evals(study.baseline("det", 0))
    assert (20, 5, "ddim") in det and (1, 100, "ddpm") not in det
    assert study.evals(ab.Run("mlp", "cosine", 128, "gt", 0)) == [(1, 5, "ddim")]
    wide = ab.study_from_args(ab.build_parser().parse_args(["--device", "cpu", "--widths", "128", "256", "384"]))
    assert len(wide.runs()) == 18


def test_template_and_errors(tmp_path, capsys):
    text = ab.build_report({})
    for title in ab.SECTIONS:
        assert f"\n## {title}\n" in text, title
    assert "No results yet" in text
    assert ab.main(["--report-only", "--out", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert ab.main(["--smoke", "--out", str(tmp_path), "--seeds", "0", "0"]) == 2
    assert "each seed once" in capsys.readouterr().err


def test_train_script_is_a_thin_command_line():
    """train/ablations.py holds no logic: it runs diffupose.ablations.main (its --help is the module's)."""
    script = ROOT / "train" / "ablations.py"
    code = [ln for ln in script.read_text().splitlines() if ln.strip() and not ln.startswith((" ", '"', "#"))]
    assert "from diffupose.ablations import main  # noqa: E402" in code and len(script.read_text().splitlines()) < 20
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: ablations.py") and "--dry-run" in r.stdout and "--report-only" in r.stdout
