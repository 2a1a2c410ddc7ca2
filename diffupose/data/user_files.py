"""The checks every reader of a user's file shares, so that each kind of bad file gets the same
one-line refusal wherever it is handed in:

- `require_regular_file`: a FIFO, a socket or a device named `poses.json` would block the reader
  (or stream forever), so only regular files (or links to them) are opened;
- `parse_json`: JSON nested deeper than Python's recursion limit, integers of thousands of digits
  and non-UTF text are refusals naming the file, not a RecursionError or a traceback;
- `open_text`: text (CSV, ...) in UTF-8, or UTF-16 / UTF-32 (what spreadsheets write as "Unicode
  text"); a decoding error names the file and line;
- `check_finite`: numbers that are NaN, infinite or beyond a sane magnitude (a 1e300 in a mocap
  channel, 1e30 in a lift output) are refused before they become inf/NaN poses or garbage plots.

Each takes the exception class to raise, so that a reader keeps its own (KeypointError, ...);
`UserFileError` (a ValueError) is the default.
"""
from __future__ import annotations

import codecs
import json
import os
import stat
from pathlib import Path
from typing import IO, Optional, Type, Union

import numpy as np

PathLike = Union[str, os.PathLike]


class UserFileError(ValueError):
    """A file handed in by the user that cannot be used; the message (one line) names it."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def require_regular_file(path: PathLike, what: str = "input file", error: Type[Exception] = UserFileError,
                         missing: Type[Exception] = FileNotFoundError) -> Path:
    """path, if it names a regular file (links followed); else `missing` (absent) or `error`."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise missing(f"{what} not found: {path}") from None
    except OSError as e:  # a dangling link's loop, a permission problem on a parent, a name too long
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise error(f"{what} {path} is {_kind(mode)}, not a regular file; refusing to read it")
    return path


def parse_json(data: Union[bytes, str], where: str, error: Type[Exception] = UserFileError):
    """json.loads with every failure as one line `{where}: ...` (bytes: UTF-8/16/32 detected by
    json itself)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply to read") from None
    except UnicodeDecodeError as e:
        raise error(f"{where}: not UTF-8/16/32 text (byte {e.start}: {e.reason})") from None
    except json.JSONDecodeError as e:
        raise error(f"{where}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except ValueError as e:  # e.g. an integer beyond Python's digit limit
        raise error(f"{where}: not usable JSON ({' '.join(str(e).split())[:120]})") from None


def read_json_file(path: PathLike, what: str = "input file", error: Type[Exception] = UserFileError,
                   missing: Type[Exception] = FileNotFoundError):
    """The parsed JSON of a regular file."""
    path = require_regular_file(path, what, error, missing)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    return parse_json(data, str(path), error)


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # UTF-32 LE starts like UTF-16 LE


def text_encoding(path: Path) -> str:
    """The encoding of a text file: from its byte-order mark; else UTF-16 where the first
    characters are ASCII with a zero byte beside each (UTF-16 saved without a mark; such bytes are
    valid UTF-8, so decoding would not fail: it would read NULs); else UTF-8."""
    with open(path, "rb") as f:
        head = f.read(4)
    bom = next((enc for bom, enc in _BOMS if head.startswith(bom)), None)
    if bom:
        return bom
    if len(head) == 4 and head[1] == head[3] == 0 and head[0] and head[2]:
        return "utf-16-le"
    if len(head) == 4 and head[0] == head[2] == 0 and head[1] and head[3]:
        return "utf-16-be"
    return "utf-8"


def open_text(path: Path, newline: Optional[str] = None) -> IO[str]:
    """A text file opened in its encoding (text_encoding), decoding strictly: iterate it inside
    `decoding_errors` to name the line of a bad byte."""
    return open(path, "r", encoding=text_encoding(path), errors="strict", newline=newline)


def decoding_error(path: Path, line: int, e: UnicodeDecodeError, error: Type[Exception] = UserFileError) -> Exception:
    return error(f"{path}:{line}: not {e.encoding.upper()} text ({e.reason}); save it as UTF-8 (or UTF-16 with a "
                 "byte-order mark)")


def check_finite(values, where: str, limit: float, error: Type[Exception] = UserFileError, unit: str = "") -> None:
    """Refuse NaN, infinite, or |value| > limit anywhere in values (the first offender is named
    by its index); `where` names the file (and field)."""
    a = np.asarray(values)
    if a.dtype.kind not in "fiub":
        raise error(f"{where}: expected numbers, got {a.dtype}")
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise error(f"{where}: {a[idx]} at index {list(idx)}: NaN or infinite values are refused")
    big = np.abs(a.astype(np.float64, copy=False)) > limit
    if big.any():
        idx = tuple(int(i) for i in np.argwhere(big)[0])
        raise error(f"{where}: {a[idx]:.4g} at index {list(idx)} is beyond +-{limit:g}{unit}, not a plausible "
                    "value (a corrupt file or a unit mistake)")


__all__ = ["UserFileError", "check_finite", "decoding_error", "open_text", "parse_json", "read_json_file",
           "require_regular_file", "text_encoding"]
