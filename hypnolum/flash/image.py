"""Step 1: the MicroPython image into the board's SPI flash, with esptool as a library.

Pods are ESP32-S3-WROOM-1-N16R8 boards running MicroPython v1.28.0
``ESP32_GENERIC_S3``, variant ``SPIRAM_OCT``
(``ESP32_GENERIC_S3-SPIRAM_OCT-<date>-v1.28.0.bin``). An S3 image starts
with its second-stage bootloader at flash offset 0x0 (an ESP32's at 0x1000),
and carries chip id 9 in its extended header, the id the S3 ROM reports.

esptool's logger is one process-wide object; :class:`_BoardLog` routes its
lines and progress to the board whose thread is talking, so parallel boards
keep their own progress bars and logs.

Real boards: ``before="default-reset"``: on the ROM's USB-Serial/JTAG
(303a:1001) esptool drives the peripheral's own reset into download mode;
on MicroPython's USB CDC (303a:4001) it toggles DTR/RTS, which MicroPython
answers with ``machine.bootloader()`` (the port re-enumerates as
303a:1001). Then the flasher stub (fast, can erase) and
``after="hard-reset"``. A pty has no DTR/RTS, so the emulator needs
``before="no-reset"`` (the board waits in download mode), ``stub=False``
(the ROM loader itself) and ``after="soft-reset"`` (FLASH_END "run user
code" starts the application).
"""
from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FlashError, MissingImage, NoAnswer, WrongChip

CHIP_NAME = "ESP32-S3"  # what esptool calls the pods' chip
IMAGE_OFFSET = 0x0  # an ESP32-S3 image starts with its bootloader here (ESP32: 0x1000)
IMAGE_NAME = "ESP32_GENERIC_S3-SPIRAM_OCT-<date>-v1.28.0.bin"  # micropython.org's build for the pods
_ESP_IMAGE_MAGIC = 0xE9
_CHIP_ID = 9  # ESP32-S3's chip id in the image's extended header (esptool ESP32S3ROM.IMAGE_CHIP_ID)
_CHIP_IDS = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 13: "ESP32-C6"}
MODULE = "ESP32-S3-WROOM-1-N16R8"  # the pods' module: 16 MB flash, 8 MB octal PSRAM
FLASH_BYTES = 16 * 1024 * 1024  # its flash: an image written at IMAGE_OFFSET must fit
_FLASH = f"16 MB ({FLASH_BYTES} bytes) of flash of the {MODULE}"
# what a path is when it is not a regular file (checked before it is opened: reading a FIFO
# blocks, a device such as /dev/zero never ends)
_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class Image:
    path: Path
    data: bytes
    sha256: str


def load_image(path: Path | str) -> Image:
    """Read and sanity-check an ESP32-S3 image; MissingImage if absent or not one.

    The path must name a regular file (a link to one is fine) of at most
    FLASH_BYTES. It is checked before it is opened, and opened without
    blocking, so a FIFO or a device is refused at once instead of hanging or
    filling memory; the file read is checked again once open.
    """
    path = Path(path)
    try:
        _check_file(path, os.stat(path))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MissingImage(f"{path}: image not found (download MicroPython's {IMAGE_NAME}, or give --image)",
                           step="image") from None
    except OSError as exc:
        raise MissingImage(f"{path}: cannot read image: {exc.strerror}", step="image") from None
    with os.fdopen(fd, "rb") as f:
        _check_file(path, os.fstat(f.fileno()))  # the file opened is the one checked
        data = f.read(FLASH_BYTES + 1)
    if len(data) > FLASH_BYTES:
        raise MissingImage(f"{path}: grew past the {_FLASH} while it was read", step="image")
    if len(data) < 24 or data[0] != _ESP_IMAGE_MAGIC:
        raise MissingImage(f"{path}: not an ESP image (first byte {data[:1].hex() or 'none'}, expected e9)",
                           step="image")
    (chip_id,) = struct.unpack_from("<H", data, 12)  # extended header: chip id
    if chip_id != _CHIP_ID:
        chip = _CHIP_IDS.get(chip_id, "another chip")
        raise MissingImage(f"{path}: image is for chip id {chip_id} ({chip}), not an {CHIP_NAME} ({_CHIP_ID}); "
                           f"pods take {IMAGE_NAME}", step="image")
    return Image(path, data, hashlib.sha256(data).hexdigest())


def not_regular(path: Path, st: os.stat_result) -> str:
    """'' for a regular file, else what ``path`` is ("a FIFO (named pipe)", "a directory", ...),
    with the target of a symbolic link."""
    if stat.S_ISREG(st.st_mode):
        return ""
    kind = next((name for test, name in _NOT_REGULAR if test(st.st_mode)), "not a regular file")
    return f"{kind} (through the link to {os.path.realpath(path)})" if path.is_symlink() else kind


def _check_file(path: Path, st: os.stat_result) -> None:
    """MissingImage unless ``st`` is a regular file that fits the flash."""
    if kind := not_regular(path, st):
        raise MissingImage(f"{path}: {kind}, not an image file; --image takes the image file ({IMAGE_NAME})",
                           step="image")
    if st.st_size > FLASH_BYTES:
        raise MissingImage(f"{path}: {st.st_size} bytes is larger than the {_FLASH}; not a pod image "
                           f"({IMAGE_NAME})", step="image")


@dataclass
class FlashResult:
    chip: str = ""
    mac: str = ""
    log: list[str] = field(default_factory=list)


class _BoardLog:
    """esptool logger that hands each thread's output to that thread's board."""

    _local = threading.local()
    _installed = False
    _lock = threading.Lock()

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            if cls._installed:
                return
            from esptool.logger import TemplateLogger, log

            class Logger(TemplateLogger):
                def _line(self, text: str) -> None:
                    sink = getattr(cls._local, "lines", None)
                    if sink is not None and text.strip():
                        sink.append(text.strip())

                def print(self, *args, **kwargs):
                    self._line(" ".join(str(a) for a in args))

                def note(self, message):
                    self._line("note: " + message)

                def warning(self, message):
                    self._line("warning: " + message)

                def error(self, message):
                    self._line("error: " + message)

                def stage(self, finish=False):
                    pass

                def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
                    cb = getattr(cls._local, "progress", None)
                    if cb is not None:
                        cb("image", cur_iter, total_iters)

                def set_verbosity(self, verbosity):
                    pass

            log.set_logger(Logger())
            cls._installed = True

    @classmethod
    def bind(cls, lines: list[str], progress: Progress | None) -> None:
        cls._local.lines = lines
        cls._local.progress = progress


def flash_image(port: str, image: Image | None, *, baud: int = 460800, before: str = "default-reset",
                after: str = "hard-reset", stub: bool = True, erase: bool = False,
                progress: Progress | None = None, result: FlashResult | None = None) -> FlashResult:
    """Connect to the ROM loader, check the chip, write and verify the image, reset.

    ``image=None`` only identifies the board (chip and MAC). Runs in the
    calling thread (esptool blocks). ``result`` (chip, MAC, esptool's lines)
    is filled in as far as the board got, also when this raises.
    """
    from esptool.cmds import attach_flash, detect_chip, reset_chip, run_stub, write_flash
    from esptool.util import FatalError

    _BoardLog.install()
    result = result if result is not None else FlashResult()
    _BoardLog.bind(result.log, progress)
    esp = None
    try:
        try:
            esp = detect_chip(port, 115200, connect_mode=before, connect_attempts=3)
        except (FatalError, OSError) as exc:
            raise NoAnswer(f"{port}: no ESP ROM loader answered ({_short(exc)}); is the board in download mode "
                           "(hold BOOT while pressing RESET or plugging in USB)?", step="connect") from None
        result.chip = esp.CHIP_NAME
        if esp.CHIP_NAME != CHIP_NAME:
            raise WrongChip(f"{port}: this board is an {esp.CHIP_NAME}, pods use an {CHIP_NAME}", step="connect")
        result.mac = ":".join(f"{b:02x}" for b in esp.read_mac())
        if image is None:
            reset_chip(esp, after)
            return result
        if erase and not stub:
            raise FlashError("--erase needs the flasher stub (the ROM loader cannot erase the chip)",
                             step="image")
        try:
            if stub:
                esp = run_stub(esp)
            if baud != 115200:
                esp.change_baud(baud)
            attach_flash(esp)
            # write_flash ends with the chip's MD5 of the written region against the image's
            write_flash(esp, [(IMAGE_OFFSET, image.data)], compress=True, erase_all=erase)
            reset_chip(esp, after)
        except (FatalError, OSError) as exc:
            raise FlashError(f"{port}: writing the image failed: {_short(exc)}", step="image") from None
        return result
    finally:
        if esp is not None:
            try:
                esp._port.close()
            except OSError:
                pass
        _BoardLog.bind(None, None)


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
