"""The firmware as the emulator runs it: compiled as the flash tool compiles it.

A board runs ``.mpy`` files (tools/flash.py uploads them), not sources: the
bytecode is loaded into the heap, and no compiler runs at import. The emulator
does the same, for the 32-bit x86 unix port (``mpy-cross -march=x86``), so the
heap a pod uses under emulation is the heap it uses on the board. Sources are
compiled once per content into a cache directory and reused by every pod.

:func:`micropypath` gives the MICROPYPATH for the default firmware: the HAL shim
first, then the firmware, then the frozen modules. :func:`heap_budget` is the
firmware's committed heap (firmware/pod/budget.py), which every pod runs at.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hypnolum import paths
from hypnolum.flash.bundle import source_name  # as the flash tool compiles for a board

MARCH = "x86"  # the unix port built 32-bit, as the board's words are
MANIFEST = paths.ROOT / "emulator" / "manifest.py"  # frozen into the interpreter (tools/build_micropython.sh)
_MODULE_RE = re.compile(r'^module\("([\w.]+\.py)", base_path="([\w/]+)"\)$', re.M)
_SOURCE_ONLY = ("boot.py", "main.py", "launch.py")  # run as source, as MicroPython runs these names
_BUDGET_RE = re.compile(r"^HEAP_BUDGET = const\((\d+)\)", re.M)


class ImageError(RuntimeError):
    """The firmware could not be compiled for the emulator."""


def heap_budget() -> int:
    """The firmware's committed heap in bytes (firmware/pod/budget.py)."""
    m = _BUDGET_RE.search((paths.FIRMWARE / "pod" / "budget.py").read_text())
    if m is None:
        raise ImageError("firmware/pod/budget.py: no HEAP_BUDGET = const(N)")
    return int(m.group(1))


def _mpy_cross() -> str:
    beside = Path(sys.executable).parent / "mpy-cross"
    if not beside.exists():
        raise ImageError(f"{beside}: missing; run `make setup` (it builds mpy-cross v1.28.0)")
    return str(beside)


def frozen_shims() -> list[Path]:
    """The shim modules frozen into the interpreter (emulator/manifest.py)."""
    text = MANIFEST.read_text()
    return [MANIFEST.parent / base / name for name, base in _MODULE_RE.findall(text)]


def frozen_digest() -> str:
    """What the interpreter must have frozen: the manifest and its shim modules."""
    h = hashlib.sha256(MANIFEST.read_bytes())
    for p in frozen_shims():
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def check_frozen(micropython: str | None = None) -> None:
    """ImageError unless the interpreter (default: the pods') was built with today's frozen shim modules."""
    from .pod import find_micropython

    stamp = Path((micropython or find_micropython()) + ".frozen")
    have = stamp.read_text().strip() if stamp.exists() else "none"
    if have != frozen_digest():
        names = ", ".join(p.name for p in frozen_shims())
        raise ImageError(f"{stamp}: the interpreter's frozen modules ({names}) are not today's "
                         f"emulator/mpy sources; run `make setup` (it rebuilds them in seconds)")


def _sources(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*.py") if "__pycache__" not in p.parts)


def _digest(trees: list[Path]) -> str:
    h = hashlib.sha256(MARCH.encode() + b"\0" + source_name("pod/x.py").encode())  # how it compiles
    h.update(Path(_mpy_cross()).read_bytes())
    h.update(frozen_digest().encode())  # what is frozen is left out of the image
    for tree in trees:
        for p in _sources(tree):
            h.update(str(p.relative_to(tree)).encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _compile_tree(tree: Path, out: Path) -> None:
    mpy_cross = _mpy_cross()
    frozen = set(frozen_shims())
    for src in _sources(tree):
        if src in frozen:
            continue  # the interpreter has it frozen, as the board has its C counterpart
        rel = src.relative_to(tree)
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.name in _SOURCE_ONLY:
            dst.write_bytes(src.read_bytes())
            continue
        proc = subprocess.run(
            [mpy_cross, f"-march={MARCH}", "-s", source_name(str(rel)), "-o", str(dst.with_suffix(".mpy")), str(src)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise ImageError(f"{src}: mpy-cross -march={MARCH} failed: {proc.stderr.strip()}")


def build(trees: list[Path] | None = None, cache: Path | None = None) -> list[str]:
    """Compile each tree (default: the HAL shim and firmware/) once; returns their directories, in order."""
    trees = [Path(t) for t in (trees or [paths.EMULATOR_SHIMS, paths.FIRMWARE])]
    check_frozen()
    root = Path(cache or os.environ.get("HYPNOLUM_IMAGE_CACHE") or Path(tempfile.gettempdir()) / "hypnolum-image")
    image = root / _digest(trees)
    dirs = [image / str(i) for i in range(len(trees))]
    if not (image / "done").exists():
        tmp = Path(tempfile.mkdtemp(prefix="build-", dir=root.mkdir(parents=True, exist_ok=True) or root))
        for i, tree in enumerate(trees):
            _compile_tree(tree, tmp / str(i))
        (tmp / "done").touch()
        try:
            tmp.rename(image)  # atomic: pods starting together share one finished image
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (image / "done").exists():
                raise
    return [str(d) for d in dirs]


def micropypath() -> list[str]:
    """MICROPYPATH for the default firmware: compiled shim, compiled firmware, frozen modules."""
    return build() + [".frozen"]
