"""Train DiffuPose on Human3.6M (VideoPose3D-layout files in --data-dir) or, with --dataset cmu,
on the embedded CMU set. `python train/h36m.py --help` lists every option."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffupose.recipes import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(default_dataset="h36m"))
