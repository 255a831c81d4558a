"""Ptys standing for USB serial ports: the host side opens a stable symlink."""
from __future__ import annotations

import contextlib
import os
import tty
from pathlib import Path


def linked_pty(link: Path) -> tuple[int, int, str]:
    """A raw pty (master non-blocking) whose slave ``link`` points to, re-pointed atomically
    (the link never dangles half-made): (master fd, slave fd, slave path)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    path = os.ttyname(slave)
    tmp = link.with_name(link.name + ".new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(path, tmp)
    os.replace(tmp, link)
    return master, slave, path
