"""Update keys: the secret a pod checks an update's manifest against (docs/update.md).

A key is 32 random bytes. On the host it is a text file of 64 hex digits;
on the pod, ``update.key`` holds the 32 bytes. The flash tool gives every pod
either the fleet key the technician names (``--update-key FILE``) or a key of
its own, generated at the first flashing and kept as ``<dir>/<pod id>.key``
(``--update-keys DIR``) so that re-flashing the pod keeps it.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import BadConfig

KEY_SIZE = 32
POD_FILE = "update.key"


def generate() -> bytes:
    return secrets.token_bytes(KEY_SIZE)


def read(path: Path) -> bytes:
    """The key in a key file; BadConfig naming the file and what is wrong."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise BadConfig(f"{path}: update key file not found", step="config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadConfig(f"{path}: cannot read the update key: {exc}", step="config") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_SIZE:
        raise BadConfig(f"{path}: not an update key: a key is {KEY_SIZE * 2} hex digits, "
                        f"this file holds {len(text)} characters", step="config")
    return key


def write(path: Path, key: bytes) -> None:
    """Write a key file readable by its owner only, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    os.replace(tmp, path)


def for_pod(keys_dir: Path, pod_id: str) -> bytes:
    """The pod's own key from keys_dir, made and kept there if it has none yet."""
    path = Path(keys_dir) / f"{pod_id}.key"
    if path.exists():
        return read(path)
    key = generate()
    write(path, key)
    return key
