"""An emulated pod board as the flash tool and hostd meet it: the S3's native USB, two ports.

A real pod board (ESP32-S3-WROOM-1-N16R8) has one USB-C port wired to the
S3's native USB, and what enumerates on it depends on what the chip is doing:

* **download mode** (BOOT held while plugging in or pressing RESET, or
  ``machine.bootloader()``): the ROM serial bootloader over the S3's
  USB-Serial/JTAG (303a:1001, serial number the MAC), which esptool talks to;
* **MicroPython, no firmware** (no ``main.py`` yet, or SAFE held at reset
  for safe mode): the REPL on MicroPython's USB CDC (303a:4001, interface 0),
  which mpremote talks to (raw REPL, raw-paste);
* **the pod firmware** (``main.py`` started it after a hard reset): the REPL's
  CDC still (the app's prints), and once the app opens it the pod link as its
  own USB function (pod.json's ``usb_link``): a second CDC-ACM tty on
  interface 2 (``"cdc"``, 303a:4001) or a vendor interface 2 with no tty
  (``"vendor"``, 303a:4021, serial number the pod id), which hostd's pyusb
  transport and the flash tool's verify open.

:class:`EmulatedBoard` presents them as the host sees them:

* ``port`` (``workdir/<name>.tty``, a symlink to one pty that lives as long as
  the board) is the REPL's tty and, in download mode, the ROM loader's (a real
  S3 re-enumerates between the two; a /dev/ttyACM path usually comes back);
* ``link_port`` (``workdir/hypnolum/pod-<serial>``, as udev names interface 2:
  host/deploy/60-hypnolum.rules) is the pod link's tty, the firmware's own pty,
  present only while the app has its CDC link open; with ``usb_link: "vendor"``
  there is none and the link is on the firmware's ``fs/usb.sock``
  (emulator/mpy/usbcable.py), as for an EmulatedPod;
* ``sysfs_root`` (default ``workdir/sys``) describes the USB device as Linux's
  sysfs would (emulator/usb_sysfs.py): its VID:PID, serial number and
  interfaces with their ttys, changing as the board re-enumerates. Host tools
  read it when ``HYPNOLUM_SYSFS_ROOT`` names it (host/repl_port.py).

The faces:

* download mode: :class:`~hypnolum.emulator.esp_rom.FakeEspRom` (an
  ESP32-S3 ROM unless ``chip`` says otherwise) over the file-backed 16 MB
  flash ``<dir>/flash.bin``; esptool's "run user code"
  (``--after soft-reset``) leaves it;
* REPL: the MicroPython unix interpreter on a pty of its own, with that pty
  as controlling terminal (``setsid`` + ``TIOCSCTTY``) in raw mode with ISIG,
  so Ctrl-C interrupts, the raw REPL and raw-paste work. Its working
  directory is the board's filesystem ``<dir>/fs``; ``machine.reset()``
  (from ``emulator/mpy_repl/machine.py``) is a hard reset, after which the
  firmware boots if ``main.py`` is there; any other exit of the interpreter
  (Ctrl-D in the raw REPL) is a soft reboot: ``soft reboot\\r\\n``, and the
  REPL comes back without running ``main.py``, in raw mode if it was;
* firmware: an :class:`~hypnolum.emulator.pod.EmulatedPod` that runs the
  files **from** ``<dir>/fs`` (MICROPYPATH = HAL shim, fs, frozen), with the
  provisioned ``fs/pod.json``; what it prints goes to ``port``, and bytes sent
  to ``port`` meanwhile are dropped and counted, all but a Ctrl-C (0x03) once
  main.py runs: as MicroPython's CDC does (shared/tinyusb/mp_usbd_cdc.c:79-83,
  with pyexec's interrupt character: shared/runtime/pyexec.c:127-129) it stops
  the app (``EmulatedPod.interrupt``: SIGINT, a KeyboardInterrupt in main.py,
  whose traceback the port shows) and the REPL takes the port
  (ports/esp32/main.c:161-179), with the bytes that followed the Ctrl-C. The
  app's USB function stays enumerated, silent, as a runtime USB device stays
  until a soft or hard reset (shared/tinyusb/mp_usbd_runtime.c:444-458, called
  at soft reset: ports/esp32/main.c:208-210); ``link_port`` stays. The watchdog
  the app armed (or boot.py's) is fed no more: it resets the board after its
  timeout (machine.WDT is the task watchdog with a user of its own, fed only by
  ``feed()``, panicking on expiry: ports/esp32/machine_wdt.c:51-76), and the
  firmware boots again.
  A boot into safe mode (the SAFE_MODE command: ``hal.safe_mode()`` prints
  ``hypnolum: safe mode, firmware not started`` after boot.py, and main.py
  starts nothing) leaves the REPL on the port, as on the board.

The flashed image is not executed (the unix port stands in for it), but the
board only leaves download mode for an application if ``flash.bin`` holds
an ESP image header (0xE9) at 0x0, where an ESP32-S3 image starts (its
second-stage bootloader; an ESP32's starts at 0x1000).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import struct
import sys
import termios
import tty
from dataclasses import dataclass, field
from pathlib import Path

from hypnolum import paths
from hypnolum.procs import die_with_parent

from . import image
from .esp_rom import CHIPS, FakeEspRom, FlashFile
from .pod import EmulatedPod, find_micropython, interpreter_env, listening
from .ptys import linked_pty
from .usb_sysfs import Identity, Interface, UsbSysfs

SAFE_MODE_LINE = "hypnolum: safe mode, firmware not started"  # hal.safe_mode() prints it (firmware/hal.py)
HARD_RESET_STATUS = 42  # machine.reset() in the REPL exits with this (mpy_repl/machine.py)
APP_OFFSET = 0x0  # an ESP32-S3 image starts with the 2nd-stage bootloader here (ESP32: 0x1000)
REPL_SHIMS = paths.ROOT / "emulator" / "mpy_repl"
_BACKLOG = 4095  # bytes unread at the port that mean "nobody is reading"
_FOLLOW_S = 0.05  # how often firmware mode looks for the app's USB function
_CTRL_C = 0x03
# what the board's USB device presents (docs/flashing.md, "USB devices recognised"); the
# strings are the ones the emulated firmware's USB device gives (emulator/mpy/usbcable.py,
# firmware/pod/usbvendor.py, pod/usbbulk.py)
ROM_USB = (0x303A, 0x1001, "USB JTAG/serial debug unit")
REPL_USB = (0x303A, 0x4001, "Espressif Device")
VENDOR_USB = (0x303A, 0x4021, "hypnolum pod")
LINK_NAME = "hypnolum link"


@dataclass
class BoardCounters:
    host_bytes: dict[str, int] = field(default_factory=dict)  # host -> board bytes, per mode
    board_bytes: dict[str, int] = field(default_factory=dict)  # board -> host bytes, per mode
    dropped_bytes: int = 0
    interrupts: int = 0  # Ctrl-Cs on the port that stopped the running app
    resets: list[str] = field(default_factory=list)  # mode entered at each reset
    soft_reboots: int = 0


class BoardError(RuntimeError):
    pass


class EmulatedBoard:
    """One emulated board ``name`` with its files in ``workdir/<name>/`` and port ``workdir/<name>.tty``.

    ``mac`` (6 bytes) is the base MAC the ROM reports and ``unique_id()``
    returns; ``chip="esp32"`` or ``"esp8266"`` makes the ROM answer as a
    wrong chip would (pods are ESP32-S3).
    """

    def __init__(self, name: str, workdir: str | os.PathLike, *, mac: bytes | None = None,
                 chip: str = "esp32s3", seed: int = 0, heapsize: str | None = None,
                 sysfs_root: str | os.PathLike | None = None):
        self.name = name
        self.workdir = Path(workdir).resolve()
        self.dir = self.workdir / name
        self.fs_dir = self.dir / "fs"
        self.port = self.workdir / f"{name}.tty"
        self.sysfs_root = Path(sysfs_root).resolve() if sysfs_root is not None else self.workdir / "sys"
        self.usb = UsbSysfs(self.sysfs_root)
        self.link_port: Path | None = None  # the pod link's tty while the app has its CDC link open
        self.mac = mac if mac is not None else bytes([0x7C, 0xDF, 0xA1, 0x10, seed & 0xFF, sum(name.encode()) & 0xFF])
        if chip not in CHIPS:
            raise ValueError(f"chip must be one of {', '.join(CHIPS)}, not {chip!r}")
        self.chip = chip
        self.seed = seed
        self.heapsize = heapsize or str(image.heap_budget())  # the firmware's committed heap
        self.mode = "off"  # off | download | no-image | repl | firmware
        self.counters = BoardCounters()
        self.flash: FlashFile | None = None
        self.rom: FakeEspRom | None = None
        self.pod: EmulatedPod | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._master = self._slave = None
        self._repl_master: int | None = None
        self._repl_proc: asyncio.subprocess.Process | None = None
        self._repl_raw = False
        self._repl_ready = False  # the interpreter has shown its first prompt
        self._repl_resetting = False  # machine.reset() said so: the chip is going down
        self._repl_sys: socket.socket | None = None
        self._repl_pending = bytearray()  # host bytes held until then, as a UART FIFO holds them
        self._repl_task: asyncio.Task | None = None
        self._port_pty = ""  # /dev/pts/N of ``port``
        self._app_usb: asyncio.Task | None = None  # follows the app's USB function (firmware mode)
        self._held: bytearray | None = None  # host bytes after a Ctrl-C, for the REPL that comes
        self._halted = False  # the app ended by Ctrl-C: the REPL serves the port, the pod (watchdog) stays
        self._booting = False  # entering firmware mode: the pod is starting
        self._safe_boot = False  # the firmware said it booted in safe mode: the REPL is to take the port
        self._switch: asyncio.Task | None = None
        self._mode_changed = asyncio.Event()

    @property
    def uid(self) -> str:
        return self.mac.hex()

    @property
    def mac_text(self) -> str:
        return ":".join(f"{b:02x}" for b in self.mac)

    # ------------------------------------------------------------------ API
    async def start(self, *, download: bool = True) -> None:
        """Power on: the port appears; in download mode if ``download`` (BOOT held)."""
        self._loop = asyncio.get_running_loop()
        self.fs_dir.mkdir(parents=True, exist_ok=True)
        self.flash = FlashFile(self.dir / "flash.bin")
        self._master, self._slave, self._port_pty = linked_pty(self.port)
        self._loop.add_reader(self._master, self._on_host)
        await self._enter("download" if download else self._boot_mode(False))

    async def stop(self) -> None:
        if self._switch is not None:
            self._switch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._switch
        await self._leave()
        if self._master is not None:
            self._loop.remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = None
        with contextlib.suppress(FileNotFoundError):
            self.port.unlink()
        self.usb.unplug()
        if self._repl_sys is not None:
            self._loop.remove_reader(self._repl_sys.fileno())
            self._repl_sys.close()
            self._repl_sys = None
            with contextlib.suppress(FileNotFoundError):
                self._repl_sys_path().unlink()
        if self.flash is not None:
            self.flash.close()
            self.flash = None
        self.mode = "off"

    async def reset(self, *, download: bool = False, safe_mode: bool = False) -> None:
        """Press RESET: with BOOT held (``download``) into the ROM loader; with SAFE held (``safe_mode``): REPL only."""
        await self._enter("download" if download else self._boot_mode(safe_mode))

    async def wait_mode(self, mode: str, timeout: float = 10.0) -> None:
        async def until():
            while self.mode != mode:
                self._mode_changed.clear()
                await self._mode_changed.wait()
        try:
            async with asyncio.timeout(timeout):
                await until()
        except TimeoutError:
            raise BoardError(f"{self.name}: still {self.mode!r} after {timeout} s, expected {mode!r}") from None

    def has_image(self) -> bool:
        return self.flash is not None and self.flash.read(APP_OFFSET, 1) == b"\xe9"

    # ------------------------------------------------------------ the modes
    def _boot_mode(self, safe_mode: bool) -> str:
        if not self.has_image():
            return "no-image"
        if not safe_mode and (self.fs_dir / "main.py").exists():
            return "firmware"
        return "repl"

    async def _enter(self, mode: str) -> None:
        await self._leave()
        self.counters.resets.append(mode)
        if mode == "download":
            self.rom = FakeEspRom(self.flash, self.mac, chip=CHIPS[self.chip], on_run=self._rom_run)
        elif mode == "no-image":
            # what the S3 ROM prints when the flash holds no bootloader, reset after reset
            self._to_host(b"ESP-ROM:esp32s3-20210327\r\nBuild:Mar 27 2021\r\n"
                          b"rst:0x1 (POWERON),boot:0x8 (SPI_FAST_FLASH_BOOT)\r\ninvalid header: 0xffffffff\r\n")
        elif mode == "repl":
            await self._spawn_repl(raw=False)
        elif mode == "firmware":
            self._booting = True  # the app's output belongs to this mode already
            try:
                await self._start_firmware()
            finally:
                self._booting = False
        self.mode = mode
        self._present(mode)
        self._mode_changed.set()
        self._to_safe_repl()

    async def _leave(self) -> None:
        self._held, self._halted, self._safe_boot = None, False, False
        if self.rom is not None:
            self.rom = None
        await self._stop_repl()
        if self._app_usb is not None:
            self._app_usb.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._app_usb
            self._app_usb = None
        self._drop_link_port()
        if self.pod is not None:
            await self.pod.stop()
            self.pod = None

    def _rom_run(self) -> None:
        # FLASH_END "run user code": the ROM's reply is already on its way
        if self._switch is None or self._switch.done():
            self._switch = self._loop.create_task(self._enter(self._boot_mode(False)))

    # ----------------------------------------------------------------- REPL
    def _repl_sys_path(self) -> Path:
        return self.dir / "repl-sys.sock"

    def _open_repl_sys(self) -> None:
        """machine.reset() announces itself here before exiting (mpy_repl/machine.py)."""
        if self._repl_sys is not None:
            return
        path = self._repl_sys_path()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.setblocking(False)
        self._repl_sys = sock
        self._loop.add_reader(sock.fileno(), self._on_repl_sys)

    def _on_repl_sys(self) -> None:
        while self._repl_sys is not None:
            try:
                msg = self._repl_sys.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            if msg[:4] == b"RST!":
                # from now on the chip is resetting: host bytes are lost, and whatever
                # ends the interpreter (even a Ctrl-C from those bytes) ends in a reset
                self._repl_resetting = True

    async def _spawn_repl(self, raw: bool) -> None:
        self._open_repl_sys()
        self._repl_resetting = False
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] |= termios.ISIG  # Ctrl-C must reach the interpreter as SIGINT
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        os.set_blocking(master, False)

        def child() -> None:
            die_with_parent(signal.SIGKILL)()  # no REPL outlives the board
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # stdin's pty becomes the controlling terminal

        env = interpreter_env(dict(os.environ, MICROPYPATH=f"{REPL_SHIMS}:.frozen", HYPNOLUM_UID=self.uid,
                                   HYPNOLUM_BOARD_SYS=str(self._repl_sys_path())))
        try:
            self._repl_proc = await asyncio.create_subprocess_exec(
                find_micropython(), "-X", f"heapsize={self.heapsize}",
                stdin=slave, stdout=slave, stderr=slave, cwd=self.fs_dir, env=env, preexec_fn=child,
            )
        finally:
            os.close(slave)
        self._repl_master = master
        self._repl_raw = raw
        self._repl_ready = False
        self._repl_pending = bytearray(b"\r\x01" if raw else b"")
        self._loop.add_reader(master, self._on_repl)
        self._repl_task = self._loop.create_task(self._watch_repl(self._repl_proc, raw))

    async def _watch_repl(self, proc: asyncio.subprocess.Process, raw: bool) -> None:
        status = await proc.wait()
        if proc is not self._repl_proc:
            return
        self._repl_task = None  # this task ends here; _enter must not cancel it
        self._on_repl_sys()
        if status == HARD_RESET_STATUS or self._repl_resetting:
            await self._enter(self._boot_mode(False))
            return
        # a soft reboot: a board does not run main.py from the raw REPL
        was_raw = self._repl_raw
        await self._stop_repl()
        self.counters.soft_reboots += 1
        self._to_host(b"soft reboot\r\n")
        await self._spawn_repl(raw=was_raw)

    async def _stop_repl(self) -> None:
        proc, self._repl_proc = self._repl_proc, None
        if self._repl_task is not None and self._repl_task is not asyncio.current_task():
            self._repl_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._repl_task
        self._repl_task = None
        if proc is not None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if self._repl_master is not None:
            self._drain_repl()
            self._loop.remove_reader(self._repl_master)
            os.close(self._repl_master)
            self._repl_master = None

    def _on_repl(self) -> None:
        self._drain_repl()

    def _drain_repl(self) -> None:
        while True:
            try:
                data = os.read(self._repl_master, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EIO: the interpreter has gone
                self._loop.remove_reader(self._repl_master)
                return
            if not data:
                return
            self._to_host(data)
            if not self._repl_ready and b">>> " in data:
                # input sent before the interpreter set up its terminal would be flushed by it
                self._repl_ready = True
                pending, self._repl_pending = bytes(self._repl_pending), bytearray()
                self._to_repl(pending)

    def _to_repl(self, data: bytes) -> None:
        if self._repl_master is None:
            self.counters.dropped_bytes += len(data)
            return
        if self._repl_resetting:
            self.counters.dropped_bytes += len(data)
            return
        if not self._repl_ready:
            self._repl_pending += data
            return
        for b in data:  # follow raw / friendly mode for the next soft reboot
            if b == 0x01:
                self._repl_raw = True
            elif b == 0x02:
                self._repl_raw = False
        try:
            os.write(self._repl_master, data)
        except OSError:
            self.counters.dropped_bytes += len(data)

    # ------------------------------------------------------------- firmware
    def _pod_json(self) -> dict:
        try:
            cfg = json.loads((self.fs_dir / "pod.json").read_text())
        except (OSError, ValueError):
            return {}  # the firmware refuses it and starts with its defaults
        return cfg if isinstance(cfg, dict) else {}

    async def _start_firmware(self) -> None:
        usb_link = "vendor" if self._pod_json().get("usb_link") == "vendor" else "cdc"
        self.pod = EmulatedPod(
            self.name, self.fs_dir, seed=self.seed, uid=self.uid, tty_link=self.dir / "link.tty",
            micropypath=[image.build([paths.EMULATOR_SHIMS])[0], self.fs_dir, ".frozen"], heapsize=self.heapsize,
            write_config=False, usb_link=usb_link,
        )
        self.pod.on_output = self._on_pod_output
        self.pod.on_repl = self._on_app_stopped
        self.pod.on_boot = self._on_app_boot
        await self.pod.start()

    def _on_pod_output(self, line: str) -> None:
        firmware = self.mode == "firmware" or self._booting
        if firmware:  # what the app prints goes to the REPL's CDC
            self._to_host(line.encode() + b"\r\n")
        # the firmware booted into safe mode: main.py started nothing, the REPL takes the port
        if line.strip() == SAFE_MODE_LINE and firmware:
            self._safe_boot = True
            self._to_safe_repl()

    def _to_safe_repl(self) -> None:
        """After a safe-mode boot, once firmware mode is entered (the line may come before)."""
        if self._safe_boot and self.mode == "firmware" and not self._booting and (
                self._switch is None or self._switch.done() or self._switch is asyncio.current_task()):
            self._safe_boot = False
            self._switch = self._loop.create_task(self._enter("repl"))

    def _to_app(self, data: bytes) -> None:
        """Host bytes on the REPL's CDC while the firmware runs: nobody reads them, but a
        Ctrl-C interrupts main.py. The CDC empties its buffer at the Ctrl-C and keeps what
        follows for the REPL (shared/tinyusb/mp_usbd_cdc.c:79-87), as the board holds it here."""
        if self._held is not None:  # the app is stopping: the REPL reads these
            room = _BACKLOG - len(self._held)
            self._held += data[:max(0, room)]
            self.counters.dropped_bytes += max(0, len(data) - max(0, room))
            return
        at = data.find(_CTRL_C)
        if at < 0 or self.pod is None or not self.pod.interrupt():
            self.counters.dropped_bytes += len(data)
            return
        self.counters.interrupts += 1
        self.counters.dropped_bytes += at
        self._held = bytearray(data[at + 1:])

    def _on_app_stopped(self) -> None:
        """main.py ended by Ctrl-C (its traceback is on the port): the REPL takes the port."""
        if self.mode == "firmware" and self._held is not None and (self._switch is None or self._switch.done()):
            self._switch = self._loop.create_task(self._app_repl())

    async def _app_repl(self) -> None:
        boots = self.pod.counters.boots
        await self._spawn_repl(raw=False)
        if self._held is None or self.pod is None or self.pod.counters.boots != boots:
            await self._stop_repl()  # reset meanwhile (_on_app_boot): the firmware again
            return
        self._repl_pending += self._held
        self._held, self._halted = None, True
        self.mode = "repl"
        self._mode_changed.set()

    def _on_app_boot(self) -> None:
        """The pod's interpreter starts again: a reset (its watchdog, most often) ends the REPL."""
        self._held = None
        if not self._halted:
            return
        self._halted = False
        self.mode = "firmware"
        self.counters.resets.append("firmware")
        self._mode_changed.set()
        if self._switch is None or self._switch.done():
            self._switch = self._loop.create_task(self._stop_repl())

    # ------------------------------------------------------------------ USB
    def _present(self, mode: str) -> None:
        """The USB device as the host enumerates it in ``mode``."""
        if mode in ("download", "no-image"):
            vid, pid, product = ROM_USB
            self.usb.show(Identity(vid, pid, self.mac_text.upper(), product, (
                Interface(0, 0x02, self._port_pty), Interface(1, 0x0A), Interface(2, 0xFF))))
        elif mode in ("repl", "firmware"):
            self._show_repl()
        if mode == "firmware":
            self._app_usb = self._loop.create_task(self._follow_app(self.pod))

    def _repl_interfaces(self) -> tuple[Interface, ...]:
        return Interface(0, 0x02, self._port_pty, "Board CDC"), Interface(1, 0x0A)

    def _show_repl(self) -> None:
        vid, pid, product = REPL_USB
        self.usb.show(Identity(vid, pid, self.uid, product, self._repl_interfaces()))

    async def _follow_app(self, pod: EmulatedPod) -> None:
        """Boot after boot: MicroPython's CDC alone until the app opens its link, then the
        device with the link's function too (the S3 re-enumerates when the app configures it)."""
        boots = links = -1
        shown = False
        while True:
            if pod.counters.boots != boots:  # a reset: the device goes and comes back without the link
                # the count as the interpreter started, not as seen here: the app may have
                # connected its link already
                boots, links, shown = pod.counters.boots, pod.links_at_boot, False
                self._drop_link_port()
                self._show_repl()
            elif not shown and await self._app_link_open(pod, links):
                shown = True
                self._show_link(pod)
            await asyncio.sleep(_FOLLOW_S)

    async def _app_link_open(self, pod: EmulatedPod, links_at_boot: int) -> bool:
        """The app of this boot has configured its USB function: its CDC link connected
        link.sock, or its vendor device listens on usb.sock (emulator/mpy/usbcable.py)."""
        if pod.config.usb_link != "vendor":
            return pod.link_connected and pod.counters.link_connections > links_at_boot
        return await asyncio.to_thread(listening, pod.usb_sock)

    def _show_link(self, pod: EmulatedPod) -> None:
        if pod.config.usb_link == "vendor":
            vid, pid, product = VENDOR_USB
            serial = self._pod_json().get("pod_id") or f"pod-{self.uid}"  # the firmware's own default
            self.usb.show(Identity(vid, pid, serial, product, (
                *self._repl_interfaces(), Interface(2, 0xFF, None, LINK_NAME))))
            return
        vid, pid, product = REPL_USB
        self.usb.show(Identity(vid, pid, self.uid, product, (
            *self._repl_interfaces(), Interface(2, 0x02, pod.pts_path, LINK_NAME), Interface(3, 0x0A))))
        link = self.workdir / "hypnolum" / f"pod-{self.uid}"  # udev's name for interface 2
        link.parent.mkdir(exist_ok=True)
        tmp = link.with_name(link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(pod.pts_path, tmp)
        os.replace(tmp, link)
        self.link_port = link

    def _drop_link_port(self) -> None:
        if self.link_port is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_port.unlink()
            self.link_port = None

    # ----------------------------------------------------------------- port
    def _count(self, table: dict[str, int], n: int) -> None:
        table[self.mode] = table.get(self.mode, 0) + n

    def _on_host(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if not data:
            return
        self._count(self.counters.host_bytes, len(data))
        if self.rom is not None and self.mode == "download":
            self.rom.feed(data)
            out = self.rom.take()
            if out:
                self._to_host(out)
        elif self.mode == "repl":
            self._to_repl(data)
        elif self.mode == "firmware":
            self._to_app(data)
        else:  # the ROM printing
            self.counters.dropped_bytes += len(data)

    def _to_host(self, data: bytes) -> None:
        if self._master is None:
            return
        backlog = struct.unpack("i", fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0"))[0]
        if backlog >= _BACKLOG:  # nobody reads the port: stale bytes are lost, as on a UART
            termios.tcflush(self._slave, termios.TCIFLUSH)
            self.counters.dropped_bytes += backlog
        try:
            n = os.write(self._master, data)
        except OSError:
            n = 0
        self._count(self.counters.board_bytes, n)
        self.counters.dropped_bytes += len(data) - n


# ---------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hypnolum.emulator.board",
        description="Emulated pod boards in download mode, for trying tools/flash.py without hardware "
                    "(run it with HYPNOLUM_SYSFS_ROOT=DIR/sys, as printed).",
    )
    p.add_argument("--boards", type=int, default=1, help="number of boards (default 1)")
    p.add_argument("--dir", type=Path, required=True, help="working directory (ports are DIR/board-NN.tty)")
    p.add_argument("--wrong-chip", type=int, default=0, metavar="N", help="make board N answer as an ESP32 (not an S3)")
    return p


async def _run(args: argparse.Namespace) -> int:
    boards = [
        EmulatedBoard(f"board-{i:02d}", args.dir, seed=i, chip="esp32" if i == args.wrong_chip else "esp32s3")
        for i in range(1, args.boards + 1)
    ]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        for b in boards:
            await b.start(download=True)
            print(b.name, b.port, b.mac_text, flush=True)
        print(f"sysfs: HYPNOLUM_SYSFS_ROOT={boards[0].sysfs_root}", flush=True)
        await stop.wait()
    finally:
        for b in boards:
            await b.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
