"""The pod id grammar, and the check that keeps a file path inside its directory.

A pod id names a pod on the wire (HELLO), in MQTT topics
(``hypnolum/v1/pods/<id>/...``) and in file names (recordings, resume notes).
One grammar serves all three: an ASCII letter or digit, then up to 63 letters,
digits, ``_`` or ``-``. No ``/``, ``+``, ``#``, ``.``, space or control
character can appear, so an id can neither change a topic's levels, act as a
wildcard, nor walk out of a directory. Provisioning writes only such ids, the
pod refuses any other in its pod.json (firmware/pod/config.py), and hostd
refuses a pod that announces any other.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

POD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
POD_ID_MAX = 64
_POD_ID = re.compile(POD_ID_PATTERN)


def is_pod_id(value: object) -> bool:
    """True if ``value`` is a string in the pod id grammar (the whole string: no trailing newline)."""
    return isinstance(value, str) and _POD_ID.fullmatch(value) is not None


def pod_id_problem(value: object) -> str:
    """Why ``value`` is not a pod id ("" if it is one), for an error message."""
    if is_pod_id(value):
        return ""
    if not isinstance(value, str):
        return f"pod id must be a string, not {type(value).__name__}"
    if not value:
        return "pod id is empty"
    if len(value) > POD_ID_MAX:
        return f"pod id is {len(value)} characters long (at most {POD_ID_MAX})"
    return f"pod id {value[:80]!r} does not match {POD_ID_PATTERN}"


class PathEscape(ValueError):
    """A path that does not stay inside the directory it belongs to."""


def check_inside(directory: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """``path`` (relative paths are taken relative to ``directory``) resolved, symlinks
    followed; raises PathEscape unless it lies strictly inside ``directory`` (resolved
    too). Neither needs to exist yet."""
    base = Path(directory).resolve()
    target = (base / path).resolve()
    if target == base or not target.is_relative_to(base):
        raise PathEscape(f"{os.fspath(path)!r} resolves to {str(target)!r}, outside {str(base)!r}")
    return target
