"""Reading .npz archives whose members may be pickled object arrays (the VideoPose3D layout
stores its dicts that way) without ever running code from the file.

np.load, when it is allowed pickles, hands them to Python's unpickler, which calls whatever
global the pickle names: a crafted data_2d_*.npz can run os.system. Here each member's .npy
header is read with numpy's own header parser (a literal, never evaluated), a plain numeric
member is read with `allow_pickle=False`, and an object member's pickle goes through
`RestrictedUnpickler`, whose `find_class` admits only what numpy's own pickles of arrays need:

- numpy.core.multiarray._reconstruct / numpy._core.multiarray._reconstruct (numpy 1.x / 2.x
  names), numpy.ndarray, numpy.dtype: an array's reduce;
- numpy.core.multiarray.scalar / numpy._core.multiarray.scalar: numpy scalars (np.float64(...)
  inside a dict);
- _codecs.encode, for 'latin1' only: how pickle protocol 2 writes bytes (an array's buffer).

dict, list, tuple, str, bytes, int, float, bool and None need no global at all. Every other global
(os.system, builtins.exec, subprocess.*, posix.system, any class's __reduce__) is refused with
`UnsafePickleError`, before anything is called.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Sequence, Type, Union

import numpy as np
from numpy.lib import format as npf

from .user_files import UserFileError, require_regular_file

PathLike = Union[str, os.PathLike]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that names a global outside the admitted few."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol 2 writes a bytes object b as _codecs.encode(b.decode('latin1'), 'latin1'); any
    # other codec is not something numpy writes.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict:
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _latin1_encode}
    multiarray = _multiarray()
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # what numpy 1.x / 2.x pickles name
        for name in ("_reconstruct", "scalar"):
            allowed[(mod, name)] = getattr(multiarray, name)
    return allowed


def _multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return multiarray


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only the globals numpy's array pickles use."""

    _ALLOWED: dict = {}

    def find_class(self, module: str, name: str):
        if not RestrictedUnpickler._ALLOWED:
            RestrictedUnpickler._ALLOWED = _allowed_globals()
        try:
            return RestrictedUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise UnsafePickleError("a persistent id")


def restricted_loads(data: bytes):
    """Unpickle data admitting only plain containers, numbers, strings and numpy arrays."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def _read_member(zf: zipfile.ZipFile, member: str):
    """One .npy member: a numeric array (allow_pickle=False), or an object array unpickled safely."""
    with zf.open(member) as f:
        version = npf.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npf.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):  # 3.0 differs from 2.0 only in allowing UTF-8 field names
            shape, fortran, dtype = npf.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
        if dtype.hasobject:
            arr = RestrictedUnpickler(f).load()
            if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
                raise ValueError(f"the pickle holds a {type(arr).__name__}, not the {tuple(shape)} object array "
                                 "its header announces")
            return arr
    with zf.open(member) as f:
        return npf.read_array(f, allow_pickle=False)


def _corrupt(path: Path, where: str, e: BaseException, error: Type[Exception]) -> Exception:
    # A damaged archive or pickle fails in almost any way (BadZipFile, zlib.error, EOFError,
    # UnpicklingError, a SyntaxError from the header parser, ...): to the user they mean one thing.
    # Running out of memory does not, so it is not caught.
    text = " ".join(str(e).split())[:200]
    return error(f"{path}: {where} cannot be read (truncated or corrupt?): {type(e).__name__}: {text}")


def load_npz(path: PathLike, keys: Sequence[str], optional: Sequence[str] = (), what: str = "pose",
             error: Type[Exception] = UserFileError, missing: Type[Exception] = FileNotFoundError) -> dict:
    """The members `keys` (required) and `optional` (where present) of an .npz archive, read without
    running code: numeric arrays as arrays; object arrays through RestrictedUnpickler, a 0-d or
    1-element one (how np.savez stores a dict, and VideoPose3D its metadata) unwrapped to the object.
    Every failure is `error` (absent file: `missing`) with one line naming the file."""
    path = require_regular_file(path, f"{what} file", error, missing)
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        if head == b"\x93NUMPY":
            raise error(f"{path}: expected an .npz archive (np.savez), found a single .npy array")
        zf = zipfile.ZipFile(path)
    except error:
        raise
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - see _corrupt
        raise _corrupt(path, "the .npz archive", e, error) from None
    out = {}
    with zf:
        names = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
        absent = [k for k in keys if k not in names]
        if absent:
            raise error(f"{path}: missing key(s) {absent}; the archive has {sorted(names)} "
                        "(expected the VideoPose3D layout)")
        for k in list(keys) + [k for k in optional if k in names and k not in keys]:
            try:
                value = _read_member(zf, names[k])
            except UnsafePickleError as e:
                raise error(f"{path}: key {k!r} is a pickle that calls {e}; refused (only plain containers, "
                            "numbers, strings and numpy arrays are read from a data file)") from None
            except MemoryError:
                raise
            except Exception as e:  # noqa: BLE001 - see _corrupt
                raise _corrupt(path, f"key {k!r}", e, error) from None
            if isinstance(value, np.ndarray) and value.dtype == object and value.shape in ((), (1,)):
                value = value.reshape(()).item()
            out[k] = value
    return out


__all__ = ["RestrictedUnpickler", "UnsafePickleError", "load_npz", "restricted_loads"]
