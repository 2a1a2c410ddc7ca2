"""Checkpoints: safetensors weights plus a JSON config; loading never unpickles.

A checkpoint is a pair `<stem>.safetensors` + `<stem>.json`. The JSON holds everything needed to
rebuild the model and use it: the model config (architecture, skeleton, width, depth), the
diffusion config (schedule, T, pose_scale normalisation), the training recipe and dataset it came
from, and any metrics. `load_checkpoint` validates both files and raises CheckpointError with a
one-line reason for a missing, corrupt, foreign or mismatched checkpoint.

Training state for `--resume` (optimizer, EMA, RNG, step) is a torch file written atomically and
read with torch.load(weights_only=True), which refuses arbitrary pickled objects.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from .diffusion import Diffusion, DiffusionConfig
from .data.user_files import read_json_file, require_regular_file
from .model import ModelConfig, build_model

FORMAT = "diffupose-checkpoint"
VERSION = 1
# the shipped checkpoints (assets/checkpoints/README.md): the default of lift, eval, demo, bench is
# the one trained on the embedded CMU and HDM05 sets (CC BY-SA 3.0, as HDM05); cmu_gcn, trained on
# the CMU set only, is kept for a licence without ShareAlike and for the figures measured with it
CHECKPOINTS = Path(__file__).resolve().parent / "assets" / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "cmu_hdm05_gcn"
CMU_ONLY_CHECKPOINT = CHECKPOINTS / "cmu_gcn"
# the MLP denoiser trained on the same data for the same ~70 min: more accurate there (model card)
MLP_CHECKPOINT = CHECKPOINTS / "cmu_hdm05_mlp"
PathLike = Union[str, Path]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says which file and why."""


def checkpoint_paths(path: PathLike) -> tuple[Path, Path]:
    """(weights, config) for a stem, a .safetensors path, a .json path, a directory holding one
    checkpoint named model.*, or the bare name of a shipped checkpoint (`cmu_hdm05_mlp`) where no
    such local file or folder exists"""
    p = Path(path)
    if (len(p.parts) == 1 and not p.exists() and not p.with_suffix(".safetensors").exists()
            and (CHECKPOINTS / p.name).with_suffix(".json").exists()):
        p = CHECKPOINTS / p.name
    if p.is_dir():
        p = p / "model"
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: PathLike, model: nn.Module, diffusion_cfg: DiffusionConfig, *,
                    training: Optional[dict] = None, dataset: Optional[dict] = None,
                    metrics: Optional[dict] = None) -> tuple[Path, Path]:
    """Write `<stem>.safetensors` and `<stem>.json` atomically; returns their paths."""
    from safetensors.torch import save

    wpath, cpath = checkpoint_paths(path)
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.cfg.to_dict(),
        "diffusion": diffusion_cfg.to_dict(),
        "skeleton": model.cfg.skeleton,
        "normalisation": {"pose2d": "screen: x / w * 2 - [1, h / w]",
                          "pose3d": "root-relative camera-frame metres / diffusion.pose_scale"},
        "training": training or {},
        "dataset": dataset or {},
        "metrics": metrics or {},
    }
    atomic_write_bytes(wpath, save(state, metadata={"format": FORMAT}))
    write_config(cpath, config)
    return wpath, cpath


def write_config(cpath: PathLike, config: dict) -> None:
    """A checkpoint's JSON, atomically (sorted keys: the same config gives the same bytes)."""
    atomic_write_bytes(cpath, (json.dumps(config, indent=1, sort_keys=True) + "\n").encode())


def read_config(path: PathLike) -> dict:
    _, cpath = checkpoint_paths(path)
    # a regular file only (a FIFO named model.json would block), nesting and encoding checked
    config = read_json_file(cpath, "checkpoint config", CheckpointError, CheckpointError)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{cpath} is not a diffupose checkpoint config (format is not {FORMAT!r})")
    if not isinstance(config.get("version"), int) or config["version"] > VERSION:
        raise CheckpointError(f"{cpath}: checkpoint version {config.get('version')!r} is newer than this diffupose "
                              f"reads ({VERSION}); upgrade diffupose")
    for key in ("model", "diffusion"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"{cpath}: missing the {key!r} section")
    return config


# the safetensors dtypes accepted for weights: floating point only (an integer tensor would be cast
# silently, every weight rounded; issue 11 measured poses 110 mm off)
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


def check_weights_header(wpath: Path, cpath: Path, mcfg: ModelConfig) -> None:
    """Compare the weights file's header (names, dtypes, shapes: no tensor is read) with the model
    the config describes, built on the meta device (no memory): a config naming a huge model, or
    weights of another shape or of an integer dtype, are refused before anything is allocated."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(wpath), framework="pt") as f:
            header = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{wpath} is not a readable safetensors file (corrupt or of another kind): {e}") from None
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(mcfg).state_dict().items()}
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    wrong = sorted(k for k in set(expected) & set(header) if expected[k] != header[k][1])
    if missing or unexpected or wrong:
        detail = "; ".join(f"{name}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for name, keys in (("missing", missing), ("unexpected", unexpected),
                                              ("wrong shape", wrong)) if keys)
        raise CheckpointError(f"{wpath} does not match the architecture in {cpath.name} "
                              f"({mcfg.arch}, d_model {mcfg.d_model}, {mcfg.n_blocks} blocks): {detail}")
    not_float = sorted(k for k, (dtype, _) in header.items() if dtype not in _FLOAT_DTYPES)
    if not_float:
        raise CheckpointError(f"{wpath}: weights must be floating point, but {', '.join(not_float[:3])}"
                              f"{' ...' if len(not_float) > 3 else ''} {'is' if len(not_float) == 1 else 'are'} "
                              f"{header[not_float[0]][0]}")


def load_checkpoint(path: PathLike, device: Union[str, torch.device] = "cpu") -> tuple[nn.Module, Diffusion, dict]:
    """(model in eval mode on `device`, its Diffusion, the whole config dict). Checked in order,
    each before anything is built from it: the config's keys, types and ranges; the weights'
    names, shapes and dtypes (from the header); their values (finite); only then the model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    wpath, cpath = checkpoint_paths(path)
    config = read_config(path)
    try:
        mcfg = ModelConfig.from_dict(config["model"])
        dcfg = DiffusionConfig.from_dict(config["diffusion"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cpath}: bad config: {e}") from None
    if "calibration" in config:  # the spread's calibration (diffupose/calibration.py), read into every lift
        from .calibration import CalibrationError, check_calibration
        from .skeleton import get_skeleton

        try:
            check_calibration(config["calibration"], get_skeleton(mcfg.skeleton).num_joints, str(cpath))
        except CalibrationError as e:
            raise CheckpointError(str(e)) from None
    require_regular_file(wpath, "checkpoint weights", CheckpointError, CheckpointError)
    check_weights_header(wpath, cpath, mcfg)
    try:
        state = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{wpath} is not a readable safetensors file (corrupt or of another kind): {e}") from None
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{wpath}: NaN or infinite weights in {', '.join(bad[:3])}")
    model = build_model(mcfg)
    expected = model.state_dict()
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.to(device).eval(), Diffusion(dcfg), config


# ---------------------------------------------------------------------------------------------
# training state for --resume
# ---------------------------------------------------------------------------------------------
def save_training_state(path: PathLike, state: dict[str, Any]) -> None:
    """Optimizer, EMA, RNG states, counters: tensors and plain containers only."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_training_state(path: PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the safe unpickler refuses anything but tensors and plain containers
        # torch's refusal is a page of advice (ending in "set weights_only=False", which would run the
        # payload): keep the one fact that matters, on one line
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:
            raise CheckpointError(f"{path} is not a readable training state: refused, its pickle calls "
                                  f"{refused.group(1)} (a training state holds only tensors and plain containers)") from None
        raise CheckpointError(f"{path} is not a readable training state ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]})") from None
