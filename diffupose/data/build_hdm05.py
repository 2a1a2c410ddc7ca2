"""Build the embedded HDM05 set (diffupose/assets/hdm05/) from the HDM05 mocap files.

    python -m diffupose.data.build_hdm05 [--source DIR] [--out DIR] [--fps 20] [--seed 0]

Five actors of the Motion Capture Database HDM05 (CC BY-SA 3.0: what is derived from it, these
files and a model trained on them, is shared under the same licence; see assets/hdm05/README.md),
imported by build_cmu.import_mocap into the same VideoPose3D layout as the CMU set (its ASF/AMC
skeletons use CMU's bone names, so the same 17-joint mapping applies).

Split: actors mm and tr only in test (two unseen people); of the train actors bd, bk and dg,
the last take of every motion class with at least three takes of that actor is held out to test
(unseen performances of seen activities by seen people), the rest is train.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Mapping, Sequence

from diffupose.data.build_cmu import build_main, import_mocap, write_split

DEFAULT_SOURCE = Path("/work/shared/data/hdm05")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "assets" / "hdm05"
HDM05_ACTORS = ("bd", "bk", "dg", "mm", "tr")
HDM05_TEST_ACTORS = ("mm", "tr")
MIN_TAKES_TO_HOLD_OUT = 3

# Activity label per HDM05 motion class (the class name up to its repetition / start-side suffix).
HDM05_CLASS_LABELS = {
    "depositFloorR": "deposit_floor", "elbowToKnee": "elbow_to_knee", "grabHighR": "grab_high",
    "hopBothLegs": "hop_both_legs", "jogLeftCircle": "jog_circle", "kickLFront": "kick",
    "lieDownFloor": "lie_down", "rotateArms": "rotate_arms", "sneak": "sneak", "squat": "squat",
    "throwBasketball": "throw",
}
# HDM_<actor>_<class>_<take>_120 (120: the capture rate, frames per second)
_HDM05_NAME = re.compile(r"^HDM_([a-z]+)_([A-Za-z0-9]+)_(\d{3})_120$")


def clip_class(action: str) -> tuple[str, int]:
    """('squat1Reps', 3) for the clip name 'HDM_bd_squat1Reps_003_120'."""
    m = _HDM05_NAME.match(action)
    if not m:
        raise ValueError(f"clip {action!r} is not named HDM_<actor>_<class>_<take>_120")
    return m.group(2), int(m.group(3))


def class_label(motion_class: str) -> str:
    for prefix, label in HDM05_CLASS_LABELS.items():
        if motion_class.startswith(prefix):
            return label
    raise ValueError(f"no activity label for HDM05 class {motion_class!r}; add it to HDM05_CLASS_LABELS")


def hdm05_split(frames: Mapping[str, Mapping[str, int]]) -> dict:
    train, test = {}, {}
    labels = {}
    for subj in sorted(frames):
        takes: dict[str, list[tuple[int, str]]] = {}
        for action in frames[subj]:
            cls, take = clip_class(action)
            labels[action] = class_label(cls)
            takes.setdefault(cls, []).append((take, action))
        held_out = {max(t)[1] for t in takes.values() if len(t) >= MIN_TAKES_TO_HOLD_OUT}
        for action in sorted(frames[subj]):
            is_test = subj in HDM05_TEST_ACTORS or action in held_out
            (test if is_test else train).setdefault(subj, []).append(action)
    return {"train": train, "test": test, "action_labels": dict(sorted(labels.items()))}


def build_hdm05(source: str | Path = DEFAULT_SOURCE, out_dir: str | Path = DEFAULT_OUT, fps: float = 20.0,
                seed: int = 0, log=print) -> dict:
    source = Path(source)
    inputs = [source / a for a in HDM05_ACTORS if (source / a).is_dir()]
    if not inputs:
        raise FileNotFoundError(f"{source}: expected one folder per actor ({', '.join(HDM05_ACTORS)}) of HDM05 "
                                "ASF/AMC files")
    # The folder names the actor (the subject); the AMC files say nothing of their 120 Hz rate.
    summary = import_mocap(inputs, out_dir, "hdm05", fps=fps, amc_fps=120.0, seed=seed, log=log)
    return write_split(out_dir, hdm05_split(summary["frames"]), summary)


def main(argv: Sequence[str] | None = None) -> int:
    return build_main(argv, "diffupose.data.build_hdm05", __doc__, build_hdm05, DEFAULT_SOURCE, DEFAULT_OUT)


if __name__ == "__main__":
    sys.exit(main())
