"""The paper's ablation study (Tables IV-VI) on the embedded CMU set, in one command: a thin
command line over diffupose.ablations (the study, its results.json and docs/RESULTS.md).
`python train/ablations.py --help` lists every option; `--dry-run` the plan and time estimate."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffupose.ablations import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
