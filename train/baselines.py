"""Train Martinez et al.'s MLP regressor (the 2D-to-3D baseline) on any dataset the project loads
(default: the embedded CMU set) and print its test tables, as `diffupose eval` scores a checkpoint.
Every option of train/h36m.py applies; `python train/baselines.py --help` lists them."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffupose.mlp_regressor import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(default_dataset="cmu"))
