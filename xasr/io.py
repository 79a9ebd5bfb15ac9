"""Writing files so that nothing is lost: output folders checked before any work, every file
written to a temporary name and renamed into place, and a full disk or a read-only folder
reported as one line naming the path, with the previous file left intact."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from xasr.errors import XasrError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskError(XasrError):
    """A file or folder that cannot be written (full disk, read-only, no permission)."""


def describe_os_error(err: OSError, path: str | Path | None = None) -> str:
    """One line for an ``OSError`` met while writing ``path`` (or ``err.filename``)."""
    where = path or err.filename or "a file (the system did not say which)"
    if err.errno in NO_SPACE:
        return (
            f"no space left on the device while writing {where}; earlier files are intact: "
            "free some space and run the same command again (a training run resumes from its "
            "last checkpoint)"
        )
    if err.errno == errno.EROFS:
        return f"cannot write {where}: the file system is read-only; choose another folder"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write {where}: permission denied; choose a folder you can write to"
    return f"{where}: {err.strerror or err}"


def output_dir(path: str | Path, option: str = "--out") -> Path:
    """Check that folder ``path`` can be written, before any work, creating nothing: it, or
    the nearest of its parents that exists, must be a folder where a probe file can be made
    (as root, permissions pass; a read-only or full file system does not). ``DiskError``
    naming ``option`` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DiskError(f"{option} {path} is a file, not a folder; choose a folder")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise DiskError(f"{option} {path}: {existing} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".xasr-probe-"):
            pass
    except OSError as err:
        raise DiskError(f"{option} {path}: {describe_os_error(err, existing)}") from None
    return path


def output_file(path: str | Path, option: str) -> Path:
    """``path`` is not a folder, and its folder can be written (``output_dir``)."""
    path = Path(path)
    if path.is_dir():
        raise DiskError(f"{option} {path} is a folder; give a file name")
    output_dir(path.parent, f"{option} {path}: its folder")
    return path


def write_files(writers: dict[Path, Callable[[Path], None]]) -> None:
    """Write every file with ``writer(temporary_path)``, then rename each into place.

    No file is replaced unless all were written, so a full disk in the middle leaves the
    previous set whole (the renames need no space). On an ``OSError`` the temporary files
    are removed and a ``DiskError`` names the file.
    """
    staged = []
    # One temporary name per DDP rank (ranks may write the same file at once), the same on
    # every run, so a write killed midway leaves a file the next write replaces.
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
    try:
        for path, write in writers.items():
            tmp = path.with_name(f"{path.name}.{rank}.tmp")
            staged.append((tmp, path))
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
    except BaseException as err:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        os_error = _os_error(err)
        if os_error is None:
            raise
        raise DiskError(describe_os_error(os_error, staged[-1][1])) from None
    for tmp, path in staged:
        os.replace(tmp, path)


def _os_error(err: BaseException) -> OSError | None:
    """``err`` as an ``OSError``: writers in Rust and C++ (safetensors) report the system's
    error in their message ("... (os error 28)") rather than raising ``OSError``."""
    if isinstance(err, OSError):
        return err
    if not isinstance(err, Exception):
        return None
    code = re.search(r"os error (\d+)", str(err))
    if code:
        return OSError(int(code[1]), os.strerror(int(code[1])))
    return None


def write_file(path: str | Path, write: Callable[[Path], None]) -> None:
    write_files({Path(path): write})


def write_text(path: str | Path, text: str) -> None:
    """Atomically write UTF-8 ``text`` to ``path``."""
    write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
