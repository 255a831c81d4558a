"""One emulated pod: the real firmware under MicroPython, wired to virtual hardware.

:class:`EmulatedPod` owns, in the pod directory ``D`` (see docs/emulator.md):

* ``D/pod.json``, the provisioning config;
* ``D/link.sock`` (stream), relayed to and from a pty whose slave is the pod's
  "USB-UART": a stable symlink ``<tty_link>`` (by default ``D/../<pod_id>.tty``,
  like udev's /dev/serial/by-id) points at the current /dev/pts/N;
* ``D/headset.sock`` (stream), served by a :class:`VirtualHeadset`;
* ``D/leds.sock`` (datagram), captured by :class:`VirtualLeds`;
* ``D/sys.sock`` (datagram), the watchdog: ``WDT1``+<I timeout_ms, ``WDTF``
  feeds, ``RST!`` reset requests;
* ``D/micropython.log``, the interpreter's stdout and stderr across boots.

The interpreter is supervised like the ESP32's reset circuitry: a missed
watchdog, a ``RST!`` or :meth:`reboot` kills it and starts it again; an
interpreter that exits on its own (an uncaught exception) is restarted too,
after a short back-off, and counted in ``crashes``.

Ctrl-C: :meth:`interrupt` sends the interpreter SIGINT once main.py runs (the
launcher prints ``MAIN_LINE`` after boot.py). main.py ends with a
KeyboardInterrupt, the launcher prints its traceback, then ``REPL_LINE``, and
stays, as a board stays in its REPL: nothing feeds the watchdog any more, so an
armed one resets the pod after its timeout and the firmware boots again.

The pty: the emulator keeps a slave fd open itself, so the master never sees
EIO while no host has the port open. Once about 4 KiB wait unread at the
slave (the tty line discipline's buffer) link.sock is no longer read, as a
USB host's cdc-acm stops reading a throttled or closed tty: the pod's IN
transfer stays pending and its own TX ring fills (docs/emulator.md). :meth:`unplug`
closes the pty and removes the symlink (an open host fd gets EIO/hang-up, as
when a cable is pulled); :meth:`replug` makes a new pty and re-points the link.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import shutil
import signal
import socket
import struct
import sys
import termios
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypnolum import paths

from hypnolum.procs import die_with_parent
from hypnolum.protocol.ids import pod_id_problem
from hypnolum.protocol.pod_json import PodJson

from . import image
from .headset import HeadsetPty, VirtualHeadset
from .signals import Participant
from .leds import VirtualLeds
from .ptys import linked_pty

TICKS_PERIOD = 1 << 30  # ticks_ms / ticks_us wrap here on the ESP32
_SLAVE_BACKLOG = 4095  # bytes unread at the slave that mean "nobody is reading": stop taking more
_POLL_S = 0.02
_CRASH_BACKOFF_S = (0.2, 5.0)
# what emulator/mpy/launch.py prints: boot.py has run and main.py starts; main.py ended by
# Ctrl-C and the board sits in its REPL
MAIN_LINE = "[emulator] main.py"
REPL_LINE = "[emulator] repl"


class PodError(RuntimeError):
    """The emulated pod could not be started or does not behave."""


def find_micropython() -> str:
    """The ``micropython`` next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise PodError("no micropython interpreter: run `make setup` (it builds MicroPython v1.28.0, 32-bit)")
    return found


# The board's heap lies below 2**31: the S3 maps its internal data RAM at 0x3FC88000-0x3FD00000
# and PSRAM at 0x3C000000-0x3E000000 (ESP-IDF soc/esp32s3 soc.h, SOC_DRAM_* and SOC_EXTRAM_DATA_*).
# There id(obj), which asyncio's IOQueue calls on every wait on a stream or flag, is a small
# int and allocates nothing (py/obj.c:519-534, v1.28.0). glibc gives a 32-bit process a heap
# block of 128 KB or more from mmap, near the top of its address space, where each id() is a
# long int (32 B a call): glibc is told to take the interpreter's heap from brk, below 2**31.
_BOARD_LIKE_HEAP = "glibc.malloc.mmap_threshold=33554432"  # up to 32 MB: every heap size the tests use


def interpreter_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a ``micropython`` that stands in for the board: its heap placed as
    the board's is (see _BOARD_LIKE_HEAP)."""
    tunables = env.get("GLIBC_TUNABLES")
    return dict(env, GLIBC_TUNABLES=_BOARD_LIKE_HEAP if not tunables else f"{tunables}:{_BOARD_LIKE_HEAP}")


def listening(path: Path) -> bool:
    """Something accepts on the AF_UNIX stream socket at ``path`` (one whose listener died refuses)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


# In the child: SIGKILL if the emulator dies without cleaning up.
_die_with_parent = die_with_parent(signal.SIGKILL)
_RELAY_SOCK = "link-relay.sock"  # where the firmware connects when the link has latency
_RELAY_PRIORITY = 10  # SCHED_FIFO priority of the link relay (root only)


def _prioritise(pid: int, nice: int | None = None, rt: int | None = None) -> None:
    """Raise a process's scheduling priority where allowed (a negative nice and SCHED_FIFO need root).

    Both are per thread on Linux: given to a running process, they reach only its
    main thread. A child gets them through ``_started_prioritised`` instead, before
    it runs, so every thread it starts inherits them."""
    with contextlib.suppress(PermissionError, ProcessLookupError, AttributeError):
        if nice is not None:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
        if rt is not None:
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(rt))


def _started_prioritised(nice: int | None, rt: int | None) -> Callable[[], None]:
    """A ``preexec_fn``: the child dies with the emulator and runs at this priority, with
    every thread it starts (the interpreter's timer and USB threads stand in for the
    board's interrupts: left at the default policy while the interpreter runs at
    SCHED_FIFO, one holding the GIL is preempted by the pods' interpreters, and the
    interpreter that waits for the GIL waits for them: a priority inversion)."""

    def preexec() -> None:
        _die_with_parent()
        _prioritise(0, nice, rt)

    return preexec


# What goes into an emulated pod's pod.json (its board's provisioning file): the
# host's model of pod.json, generated from protocol/pod_config.py (docs/pod-config.md).
PodConfig = PodJson


@dataclass
class PodCounters:
    boots: int = 0  # interpreter starts
    reboots: int = 0  # restarts after the first start, whatever the reason
    watchdog_resets: int = 0
    reset_requests: int = 0  # RST! from the firmware
    crashes: int = 0  # the interpreter exited on its own
    keyboard_interrupts: int = 0  # Ctrl-Cs that stopped main.py (interrupt())
    manual_reboots: int = 0
    link_to_pod_bytes: int = 0
    link_to_host_bytes: int = 0
    link_dropped_bytes: int = 0  # pod -> host bytes lost (unplugged, nobody reading)
    link_to_pod_dropped: int = 0  # host -> pod bytes lost (firmware not connected/reading)
    link_connections: int = 0
    wdt_feeds: int = 0
    last_reset_reason: str = ""
    exit_codes: list[int] = field(default_factory=list)


class EmulatedPod:
    def __init__(
        self,
        pod_id: str,
        pod_dir: str | os.PathLike,
        *,
        seed: int = 0,
        led_count: int = 30,
        tty_link: str | os.PathLike | None = None,
        uid: str | None = None,
        launch: str | os.PathLike | None = None,
        micropypath: list[str | os.PathLike] | None = None,
        heapsize: str | None = None,
        micropython: str | None = None,
        restart_on_exit: bool = True,
        config: PodConfig | None = None,
        env: dict[str, str] | None = None,
        write_config: bool = True,
        eeg_channels: int = 8,
        headset_pty: bool = False,
        participant: Participant | None = None,
        headset_record: int = 0,
        eeg_batch_ms: int | None = None,
        usb_link: str = "cdc",
        ble_link: object | None = None,
        ble_address: str | None = None,
    ):
        if problem := pod_id_problem(pod_id):  # the firmware would refuse it, and it names the tty link
            raise PodError(problem)
        self.pod_id = pod_id
        self.dir = Path(pod_dir).resolve()
        self.seed = seed
        self.config = config or PodConfig(
            pod_id=pod_id, led_count=led_count, eeg_channels=eeg_channels, sample_rate_hz=125 if eeg_channels > 8 else 250,
            usb_link=usb_link, ble=ble_link is not None,
            **({} if eeg_batch_ms is None else {"eeg_batch_ms": eeg_batch_ms}),  # None: the firmware's default
        )
        self.tty_path = Path(tty_link) if tty_link is not None else self.dir.parent / f"{pod_id}.tty"
        self._rng = random.Random(f"{seed}:{pod_id}")
        self.uid = uid or "%012x" % self._rng.getrandbits(48)
        self.launch = Path(launch) if launch is not None else paths.EMULATOR_SHIMS / "launch.py"
        self.micropypath = (
            [str(p) for p in micropypath]
            if micropypath is not None
            else image.micropypath()  # compiled as the flash tool compiles it
        )
        self.heapsize = heapsize or str(image.heap_budget())  # the firmware's committed heap
        self.micropython = micropython
        self.restart_on_exit = restart_on_exit
        self.extra_env = dict(env or {})
        # False: boot from the pod.json already in pod_dir (a provisioned board's filesystem)
        self.write_config = write_config
        self.counters = PodCounters()
        self.log_path = self.dir / "micropython.log"
        self.log_tail: deque[str] = deque(maxlen=200)
        self.on_output: Callable[[str], None] | None = None  # called with each line the interpreter prints
        self.on_repl: Callable[[], None] | None = None  # called when main.py has ended by Ctrl-C
        self.on_boot: Callable[[], None] | None = None  # called at each interpreter start
        self.main_running = False  # this boot's main.py has started (and not ended by Ctrl-C)
        self.in_repl = False  # this boot's main.py ended by Ctrl-C: the board sits in its REPL
        self._interrupted = False  # SIGINT sent this boot: a second one would kill the interpreter
        self.links_at_boot = 0  # counters.link_connections when this boot's interpreter started
        # one participant per pod, drawn from (seed, pod_id): the headset's signal seed
        self.signal_seed = self._rng.getrandbits(32)
        self.participant = participant or Participant.from_seed(self.signal_seed)
        daisy = self.config.eeg_channels > 8
        # headset_record > 0: the headset keeps its last packets in headset.cyton.sent, for tests
        self.headset = VirtualHeadset(seed=self.signal_seed, participant=self.participant, daisy=daisy,
                                      record=headset_record)
        # the same participant on a pty of its own, for third-party Cyton readers (BrainFlow, the OpenBCI GUI)
        self.headset_pty = (
            HeadsetPty(self.dir.parent / f"{pod_id}-headset.tty", seed=self.signal_seed,
                       participant=self.participant, daisy=daisy)
            if headset_pty else None
        )
        self.leds = VirtualLeds(self.dir / "leds.sock")
        # BLE: the pod's radio on a bumble LocalLink the test shares with its centrals
        # (emulator/ble_radio.py); pod.json must enable ble for the firmware to use it
        # (the default config does when there is a radio)
        self.ble = None
        if ble_link is not None:
            from .ble_radio import PodRadio

            octets = [int(self.uid[i:i + 2], 16) for i in range(0, 12, 2)]
            octets[0] |= 0xC0  # a static random address: its two top bits set
            addr = ble_address or ":".join("%02X" % o for o in octets)
            self.ble = PodRadio(ble_link, self.dir / "ble.sock", addr)
        # relay filters for fault injection: bytes -> bytes (may drop or corrupt)
        self.to_host_filter: Callable[[bytes], bytes] | None = None
        self.to_pod_filter: Callable[[bytes], bytes] | None = None
        # link latency injected in both directions, as a USB-UART bridge has it
        # (emulator/link_relay.py, a process of its own between the firmware and
        # link.sock): set before start()
        self.link_jitter_s: tuple[float, float] | None = None
        self._relay: asyncio.subprocess.Process | None = None
        # scheduling priority of the interpreter (setpriority; < 0 needs root): a board has a
        # CPU of its own, an emulated pod shares the machine's with every other process
        self.nice: int | None = None
        # or SCHED_FIFO at this priority (root only): the interpreter runs as soon as it
        # has something to do, as on its own CPU (it sleeps in between)
        self.rt_priority: int | None = None
        self.ticks_ms0 = 0
        self.ticks_us0 = 0
        self.wdt_timeout_ms: int | None = None  # armed watchdog, None when off
        self._wdt_deadline = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._out_task: asyncio.Task | None = None
        self._supervisor: asyncio.Task | None = None
        self._reset = asyncio.Event()
        self._reset_reason = ""
        self._booted = asyncio.Event()
        self._link_up = asyncio.Event()
        self._listen: dict[str, socket.socket] = {}
        self._sys: socket.socket | None = None
        self._link: socket.socket | None = None
        self._detached = False  # unplug(detach=True): link.sock refused until replug()
        self._master: int | None = None
        self._slave: int | None = None
        self.pts_path: str | None = None
        self._log = None

    # ------------------------------------------------------------------ API
    # The board's sensors as the firmware reads them (hal.Thermometer, hal.VinSense):
    # a DS18B20 reading (None: it does not answer), the 5 V rail; set_sensors changes them.
    temp_c: float | None = 25.0
    vin_mv: int | None = 5000
    temp_crc_error: bool = False

    def set_sensors(self, *, temp_c: float | None | object = ..., vin_mv: int | None | object = ...,
                    temp_crc_error: bool | None = None) -> None:
        """Change what the pod's sensors read, at once, while it runs (and across reboots).

        ``temp_c=None``: the thermometer does not answer; ``temp_crc_error=True``: it
        answers with a bad CRC; ``vin_mv=None``: VIN sense unreadable. Arguments left
        out keep their value. Written to ``D/sensors.bin`` in place (the HAL shim keeps it
        open): ``<hHB`` = 1/16 degC, mV, flags (docs/emulator.md).
        """
        if temp_c is not ...:
            self.temp_c = temp_c
        if vin_mv is not ...:
            self.vin_mv = vin_mv
        if temp_crc_error is not None:
            self.temp_crc_error = temp_crc_error
        if self.dir.exists():
            self._write_sensors()

    def _write_sensors(self) -> None:
        flags = (1 if self.temp_c is None else 0) | (2 if self.temp_crc_error else 0) | (4 if self.vin_mv is None else 0)
        c16 = 0 if self.temp_c is None else max(-32768, min(32767, round(self.temp_c * 16)))
        data = struct.pack("<hHB", c16, max(0, min(65535, self.vin_mv or 0)), flags)
        fd = os.open(self.dir / "sensors.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, 0)  # one write in place: the firmware reads old or new, never half
        finally:
            os.close(fd)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def plugged(self) -> bool:
        return self._master is not None

    @property
    def link_connected(self) -> bool:
        return self._link is not None

    async def start(self) -> None:
        """Make the pod directory and sockets, the pty, and boot the firmware."""
        self._loop = asyncio.get_running_loop()
        if self.micropython is None:
            self.micropython = find_micropython()
        if not self.launch.exists():
            raise PodError(f"{self.pod_id}: no launch script at {self.launch}")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.write_config:
            (self.dir / "pod.json").write_text(self.config.to_json())
        self._write_sensors()
        self._log = open(self.log_path, "a", buffering=1, encoding="utf-8", errors="replace")
        self._bind_sockets()
        if self.ble is not None:
            await self.ble.start()
        if self.link_jitter_s is not None:
            await self._start_relay()
        self.headset.start()
        if self.headset_pty is not None:
            self.headset_pty.open()
        self.leds.open()
        self.replug()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.pod_id}-supervisor")
        booted = asyncio.create_task(self._booted.wait())
        await asyncio.wait({booted, self._supervisor}, return_when=asyncio.FIRST_COMPLETED)
        booted.cancel()
        if self._supervisor.done():
            self._supervisor.result()  # raises why the first boot failed

    async def stop(self) -> None:
        """Kill the interpreter and release every socket, fd and file."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._kill()
        if self.ble is not None:
            await self.ble.stop()
        if self._relay is not None:
            with contextlib.suppress(ProcessLookupError):
                self._relay.kill()
            await self._relay.wait()
            self._relay = None
        self.unplug()
        self._drop_link()
        await self.headset.stop()
        if self.headset_pty is not None:
            await self.headset_pty.close()
        self.leds.close()
        for sock in (*self._listen.values(), self._sys):
            if sock is not None:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(sock.fileno())
                sock.close()
        self._listen.clear()
        self._sys = None
        for name in ("link.sock", _RELAY_SOCK, "headset.sock", "leds.sock", "sys.sock", "usb.sock"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def reboot(self, reason: str = "manual") -> None:
        """Reset the pod now (like pressing EN); returns once it booted again."""
        boots = self.counters.boots
        self._request_reset(reason)
        await self.wait_boots(boots + 1)

    async def wait_boots(self, n: int, timeout: float = 10.0) -> None:
        """Until the interpreter has been started ``n`` times in all."""
        deadline = time.monotonic() + timeout
        while self.counters.boots < n:
            if time.monotonic() > deadline:
                raise PodError(f"{self.pod_id}: {self.counters.boots} boots, wanted {n} within {timeout} s")
            self._booted.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._booted.wait()

    @property
    def usb_sock(self) -> Path:
        """Where the firmware presents its USB device when pod.json's usb_link is "vendor"
        (emulator/mpy/usbcable.py): a pyusb backend connects to plug it in."""
        return self.dir / "usb.sock"

    async def wait_link(self, timeout: float = 10.0) -> None:
        """Until the firmware has connected to link.sock (usb_link "cdc") or presents its
        USB device on usb.sock (usb_link "vendor")."""
        try:
            async with asyncio.timeout(timeout):
                if self.config.usb_link == "vendor":
                    while not await asyncio.to_thread(self._usb_listening):
                        await asyncio.sleep(_POLL_S)
                    return
                await self._link_up.wait()
        except TimeoutError:
            raise PodError(
                f"{self.pod_id}: firmware did not open its link ({self.config.usb_link}) within {timeout} s; "
                f"log tail:\n{self.tail()}"
            ) from None

    def _usb_listening(self) -> bool:
        return listening(self.usb_sock)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(list(self.log_tail)[-lines:])

    def unplug(self, detach: bool = False) -> None:
        """Pull the USB cable: the pty goes away and so does the symlink.

        ``detach=True``: the pod's USB device sees the cable go too (link.sock is closed and
        refused until :meth:`replug`), as the S3's native USB does: its CDC port is no longer
        up, so the firmware's link moves to another transport that is (pod/ports.py)."""
        if detach:
            self._detached = True
            self._drop_link()
        with contextlib.suppress(FileNotFoundError):
            if self.tty_path.is_symlink():
                self.tty_path.unlink()
        if self._master is not None:
            self._loop.remove_reader(self._master)
            os.close(self._master)
            self._master = None
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        self.pts_path = None

    def replug(self) -> None:
        """Plug the cable in again: a new pty, the stable symlink re-pointed."""
        self.unplug()
        self._detached = False
        self._master, self._slave, self.pts_path = linked_pty(self.tty_path)
        self._loop.add_reader(self._master, self._on_master)

    def interrupt(self) -> bool:
        """Ctrl-C on the REPL's CDC: SIGINT to the interpreter, which raises KeyboardInterrupt in
        main.py. Only once main.py runs, and once per boot (the unix port exits at a second SIGINT
        while the first is pending: ports/unix/unix_mphal.c:65-68). True if it was sent."""
        if not (self.running and self.main_running) or self._interrupted:
            return False
        self._interrupted = True
        self.counters.keyboard_interrupts += 1
        os.kill(self._proc.pid, signal.SIGINT)
        return True

    def pause(self) -> None:
        """Freeze the interpreter (SIGSTOP): the watchdog will fire if armed."""
        if self.running:
            os.kill(self._proc.pid, signal.SIGSTOP)

    # ------------------------------------------------------------ sockets
    async def _start_relay(self) -> None:
        lo, hi = self.link_jitter_s
        self._relay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hypnolum.emulator.link_relay", str(self.dir / _RELAY_SOCK),
            str(self.dir / "link.sock"), "--jitter-ms", str(lo * 1000), str(hi * 1000),
            "--seed", f"{self.seed}:{self.pod_id}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=self._log,
            preexec_fn=_started_prioritised(None, _RELAY_PRIORITY),  # its timers are the injected jitter
        )
        async with asyncio.timeout(10):
            line = await self._relay.stdout.readline()
        if line.strip() != b"ready":
            raise PodError(f"{self.pod_id}: link relay did not start: {line!r}")

    def _bind_sockets(self) -> None:
        for name in ("link", "headset"):
            path = self.dir / f"{name}.sock"
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(path))
            sock.listen(4)
            sock.setblocking(False)
            self._listen[name] = sock
            self._loop.add_reader(sock.fileno(), self._on_accept, name)
        path = self.dir / "sys.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.setblocking(False)
        self._sys = sock
        self._loop.add_reader(sock.fileno(), self._on_sys)

    def _on_accept(self, name: str) -> None:
        try:
            conn, _ = self._listen[name].accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        if name == "headset":
            self.headset.attach(conn)
            return
        if self._detached:  # the cable is out: the device is not on the bus
            conn.close()
            return
        self._drop_link()
        self._link = conn
        self.counters.link_connections += 1
        self._loop.add_reader(conn.fileno(), self._on_link)
        self._link_up.set()

    def _drop_link(self) -> None:
        if self._link is not None:
            self._loop.remove_reader(self._link.fileno())
            self._link.close()
            self._link = None
            self._link_up.clear()

    def _on_link(self) -> None:
        """Firmware -> host, only as much as the slave has room for (USB back-pressure)."""
        room = 65536
        if self._master is not None:
            room = _SLAVE_BACKLOG - self._slave_backlog()
            if room <= 0:
                self._hold_link()
                return
        try:
            data = self._link.recv(room)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_link()
            return
        if self.to_host_filter is not None:
            data = self.to_host_filter(data)
        self._to_host(data)

    def _hold_link(self) -> None:
        """Leave the pod's bytes in link.sock until the host reads the slave again."""
        link = self._link
        self._loop.remove_reader(link.fileno())

        def resume() -> None:
            if self._link is link:
                self._loop.add_reader(link.fileno(), self._on_link)

        self._loop.call_later(_POLL_S, resume)

    def _to_host(self, data: bytes) -> None:
        if self._master is None:  # unplugged: the bytes are lost, as with the cable pulled
            self.counters.link_dropped_bytes += len(data)
            return
        try:
            n = os.write(self._master, data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            n = 0
        self.counters.link_to_host_bytes += n
        self.counters.link_dropped_bytes += len(data) - n

    def _slave_backlog(self) -> int:
        buf = fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0")
        return struct.unpack("i", buf)[0]

    def _on_master(self) -> None:
        """Host -> firmware."""
        try:
            data = os.read(self._master, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO cannot happen while we hold the slave; be safe
        if self.to_pod_filter is not None:
            data = self.to_pod_filter(data)
        if not data:
            return
        self._to_pod(data)

    def _to_pod(self, data: bytes) -> None:
        if self._link is None:
            self.counters.link_to_pod_dropped += len(data)
            return
        try:
            n = self._link.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            n = 0
        self.counters.link_to_pod_bytes += n
        self.counters.link_to_pod_dropped += len(data) - n

    def _on_sys(self) -> None:
        while True:
            try:
                msg = self._sys.recv(256)
            except (BlockingIOError, InterruptedError):
                return
            tag = msg[:4]
            if tag == b"WDTF":
                if self.wdt_timeout_ms is not None:
                    self._wdt_deadline = time.monotonic() + self.wdt_timeout_ms / 1000
                self.counters.wdt_feeds += 1
            elif tag == b"WDT1" and len(msg) >= 8:
                (self.wdt_timeout_ms,) = struct.unpack_from("<I", msg, 4)
                self._wdt_deadline = time.monotonic() + self.wdt_timeout_ms / 1000
            elif tag == b"RST!":
                self.counters.reset_requests += 1
                self._request_reset("reset")
            else:
                self._log_line(f"[emulator] unknown sys.sock datagram {msg[:16]!r}")

    # --------------------------------------------------------- the process
    def _request_reset(self, reason: str) -> None:
        if not self._reset.is_set():
            self._reset_reason = reason
            self._reset.set()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            MICROPYPATH=":".join(self.micropypath),
            HYPNOLUM_POD_DIR=str(self.dir),
            HYPNOLUM_TICKS_MS0=str(self.ticks_ms0),
            HYPNOLUM_TICKS_US0=str(self.ticks_us0),
            HYPNOLUM_UID=self.uid,
        )
        if self.link_jitter_s is not None:
            env["HYPNOLUM_LINK_SOCK"] = _RELAY_SOCK
        if self.ble is not None:  # the interpreter's stack and the radio keep one link timing
            env["HYPNOLUM_BLE_INTERVAL_MS"] = str(round(self.ble.interval_s * 1000))
            env["HYPNOLUM_BLE_PKTS"] = str(self.ble.pkts_per_event)
        env.update(self.extra_env)
        return interpreter_env(env)

    async def _spawn(self) -> None:
        # a fresh clock a few seconds before the wrap, every boot
        self.ticks_ms0 = TICKS_PERIOD - self._rng.randint(3000, 8000)
        self.ticks_us0 = TICKS_PERIOD - self._rng.randint(3000, 8000) * 1000
        self.wdt_timeout_ms = None
        self.main_running = self.in_repl = self._interrupted = False
        self._reset.clear()
        self._log_line(
            f"[emulator] boot {self.counters.boots + 1} ticks_ms0={self.ticks_ms0} ticks_us0={self.ticks_us0}"
        )
        self._proc = await asyncio.create_subprocess_exec(
            self.micropython,
            "-X",
            f"heapsize={self.heapsize}",
            str(self.launch),
            cwd=self.dir,
            env=self._env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as one
            preexec_fn=_started_prioritised(self.nice, self.rt_priority),
        )
        self._out_task = asyncio.create_task(self._pump_output(self._proc), name=f"{self.pod_id}-output")
        self.counters.boots += 1
        self.links_at_boot = self.counters.link_connections  # this boot's link connects count past it
        self._booted.set()
        if self.on_boot is not None:
            self.on_boot()

    async def _pump_output(self, proc: asyncio.subprocess.Process) -> None:
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\n")
            self._log_line(text)
            if proc is not self._proc:
                continue
            if text == MAIN_LINE:
                self.main_running = True
            elif text == REPL_LINE:
                self.main_running, self.in_repl = False, True
                if self.on_repl is not None:
                    self.on_repl()

    def _log_line(self, text: str) -> None:
        self.log_tail.append(text)
        if self.on_output is not None and not text.startswith("[emulator]"):
            self.on_output(text)
        if self._log is not None:
            self._log.write(text + "\n")

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        self.counters.exit_codes.append(proc.returncode)
        if self._out_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._out_task
            self._out_task = None

    async def _next_reset(self) -> str:
        """Wait until the pod must be reset; return why."""
        while True:
            if self._reset.is_set():
                return self._reset_reason
            if self._proc.returncode is not None:
                # a RST! sent just before exiting may still wait in sys.sock
                self._on_sys()
                return self._reset_reason if self._reset.is_set() else "exit"
            if self.wdt_timeout_ms is not None and time.monotonic() > self._wdt_deadline:
                return "watchdog"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_POLL_S):
                    await self._reset.wait()

    async def _supervise(self) -> None:
        backoff = _CRASH_BACKOFF_S[0]
        while True:
            await self._spawn()
            started = time.monotonic()
            reason = await self._next_reset()
            if reason == "exit":
                await self._kill()
                code = self.counters.exit_codes[-1]
                self.counters.crashes += 1
                self._log_line(f"[emulator] interpreter exited with status {code}")
                if not self.restart_on_exit:
                    self.counters.last_reset_reason = reason
                    return
                if time.monotonic() - started > 10:
                    backoff = _CRASH_BACKOFF_S[0]
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _CRASH_BACKOFF_S[1])
            else:
                await self._kill()
                if reason == "watchdog":
                    self.counters.watchdog_resets += 1
                elif reason == "manual":
                    self.counters.manual_reboots += 1
                self._log_line(f"[emulator] reset: {reason}")
            self.counters.last_reset_reason = reason
            self.counters.reboots += 1
