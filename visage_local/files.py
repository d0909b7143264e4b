"""Durable file writes: temporary file, fsync, rename, with the permissions of a plain open().

Every writer of a whole file (summaries, CSVs, exported GGUFs) goes through ``atomic_replace``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from visage_local.errors import ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_default_mode(path: str | os.PathLike) -> None:
    """chmod a mkstemp file (created 0600) to what open() would have given it."""
    os.chmod(path, 0o666 & ~_umask())


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort where directories cannot be fsynced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_replace(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside ``path`` to write; when the block succeeds it is fsynced, given
    a plain open()'s mode and renamed onto ``path`` (readers see the old or the new file, never
    a part); when it fails it is removed."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        give_default_mode(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename in (str(tmp), tmp):  # the user named the file, not its temporary twin
            e.filename = str(path)
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` atomically and durably (see ``atomic_replace``)."""
    with atomic_replace(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_writable(folder: str | os.PathLike) -> None:
    """ConfigError (one line) unless ``folder`` exists as a writable folder or can be made
    in its nearest existing parent: said before any work, not after it."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(f"{folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{folder}: cannot write in {existing} (permission denied)")
