"""Train DiffuPose on HumanEva-I (data_3d_humaneva15.npz, data_2d_humaneva15_gt.npz in --data-dir,
cameras JSON with --cameras). `python train/humaneva.py --help` lists every option."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffupose.recipes import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(default_dataset="humaneva"))
