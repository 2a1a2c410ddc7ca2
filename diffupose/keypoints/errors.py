"""The one exception of the keypoint readers, checks and writers (a user-facing, one-line message)."""
from __future__ import annotations

from pathlib import Path
from typing import Union

PathLike = Union[str, Path]


class KeypointError(ValueError):
    """An input that cannot be lifted as it is; the message (one line) says which and why."""



def one_line(text: str) -> str:
    return " ".join(str(text).split())

