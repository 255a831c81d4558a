"""An emulated pod whose filesystem is what the flash tool leaves on a board.

The pod directory holds ``boot.py`` and ``main.py`` at the root, the app in
slot ``a/`` (the flash tool's :class:`hypnolum.flash.bundle.Bundle`, compiled
``x86`` for the emulator's 32-bit unix port), ``slots.json`` as the upload
writes it first (``upload.FIRST_STATE``), ``update.key`` and ``pod.json``. The
interpreter boots it as a board does: ``boot.py`` picks the slot, ``main.py``
runs the app from it, so it can be updated over the link (docs/update.md).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hypnolum import paths
from hypnolum.flash import bundle, upload, updatekey

from . import image
from .pod import EmulatedPod


def lay_out(fs: Path, app: bundle.Bundle, key: bytes) -> None:
    """Write a freshly flashed board's files into ``fs`` (pod.json: the pod writes it at start)."""
    for f in app.files:
        path = fs / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.data)
    (fs / upload.STATE_FILE).write_bytes(upload.FIRST_STATE)
    (fs / updatekey.POD_FILE).write_bytes(key)


def micropypath(fs: Path) -> list[str | os.PathLike]:
    """MICROPYPATH of a board booting from ``fs``: the HAL shim, the filesystem root, frozen modules."""
    return [image.build([paths.EMULATOR_SHIMS])[0], Path(fs).resolve(), ".frozen"]


def flashed_pod(pod_id: str, pods_dir: str | os.PathLike, app: bundle.Bundle, key: bytes,
                **kwargs: Any) -> EmulatedPod:
    """An :class:`EmulatedPod` booting from a flashed filesystem in ``pods_dir/<pod_id>``;
    its tty is ``pods_dir/<pod_id>.tty``."""
    fs = Path(pods_dir) / pod_id
    fs.mkdir(parents=True, exist_ok=True)
    lay_out(fs, app, key)
    return EmulatedPod(pod_id, fs, micropypath=micropypath(fs), **kwargs)
