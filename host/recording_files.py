"""Recording files: private (0600 files, 0700 directories, whatever the umask) and kept
inside their directory (a path built from a pod id must name a file directly in it)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..protocol.ids import PathEscape, check_inside

log = logging.getLogger("hypnolum.host.recorder")


class RecorderError(ValueError):
    """A recording, or one of its files, that cannot be made (the message says what and where)."""


def inside(directory: Path, name: str) -> Path:
    """``directory/name``, refused unless it names a file directly in ``directory`` once resolved."""
    try:
        path = check_inside(directory, name)
    except PathEscape as exc:
        raise RecorderError(f"refusing a recording file outside {directory}: {exc}") from None
    if path.parent != Path(directory).resolve():
        raise RecorderError(f"refusing {name!r}: not a file directly in {directory}")
    return path


def private_dir(directory: Path) -> Path:
    """``directory``, made (with any missing parents) 0700 whatever the umask."""
    directory = Path(directory).absolute()
    missing = []
    p = directory
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            continue
        os.chmod(p, 0o700)
    if not missing and directory.is_dir() and directory.stat().st_mode & 0o077:
        log.warning("%s is open to other users (mode %o); recordings in it are 0600", directory,
                    directory.stat().st_mode & 0o777)
    return directory


def open_private(path: Path, flags: int) -> int:
    fd = os.open(path, flags | os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def replace_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (a tmp file renamed over it), mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = open_private(tmp, os.O_TRUNC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
