"""Serial transport: a pod on a UART, USB CDC port or the emulator's pty.

pyserial opens and configures the port (raw mode, baud rate, exclusive lock);
the bytes then move through the event loop on the non-blocking file
descriptor, so no thread is involved. The reader callback stays registered
for the transport's whole life and appends what arrives to a buffer that
``read()`` hands over in one piece: registering it per read cost two epoll
changes per frame, a large share of hostd's CPU with many streaming pods.
An unplugged device or a pty whose other side closed shows up as EIO/EOF on
read, which ends the session cleanly (``read()`` returns ``b""``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import termios
import time

import serial

from .base import Transport, TransportClosed, TransportError

log = logging.getLogger(__name__)

_READ_SIZE = 4096
_RX_LIMIT = 1 << 20  # stop reading while this much waits unread (the kernel buffer then fills)


class SerialTransport(Transport):
    def __init__(self, path: str, baudrate: int = 921600):
        self.name = path
        self.baudrate = baudrate
        self._port: serial.Serial | None = None
        self._fd = -1
        self._closed = False
        self._waiter: asyncio.Future | None = None  # a write waiting for room
        self._rx = bytearray()  # received, not yet read()
        self._rx_waiter: asyncio.Future | None = None  # a read() waiting for bytes
        self._eof = False  # EOF/EIO seen: read() returns b"" once the buffer is empty
        self._paused = False  # reader removed while _RX_LIMIT bytes wait
        self._loop: asyncio.AbstractEventLoop | None = None
        self.rx_ns = 0  # CLOCK_REALTIME by which every byte of the last read() had arrived
        self._rx_last_ns = 0  # when the newest buffered bytes were seen

    async def open(self) -> None:
        try:
            # a real USB port can take a moment to open; keep the loop free
            self._port = await asyncio.to_thread(
                serial.Serial, self.name, self.baudrate, timeout=0, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(f"{self.name}: cannot open: {exc}") from None
        self._fd = self._port.fileno()
        os.set_blocking(self._fd, False)
        # pyserial's timeout=0 sets VMIN=0, where an idle read returns b"" and
        # looks like EOF; VMIN=1 makes it EAGAIN, so b"" then means hang-up.
        try:
            attrs = termios.tcgetattr(self._fd)
            attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 1, 0
            termios.tcsetattr(self._fd, termios.TCSANOW, attrs)
        except termios.error as exc:
            self._port.close()
            raise TransportError(f"{self.name}: cannot configure: {exc}") from None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            log.debug("%s: read ended: %s", self.name, exc)  # EIO: the other side is gone
            data = b""
        if data:
            # as the loop sees the bytes, not after decoding; the newest chunk's instant
            # bounds every buffered byte's arrival from above (an older chunk's would be
            # too early for the bytes after it, and a clock bound that is too tight)
            self._rx_last_ns = time.time_ns()
            self._rx += data
            if len(self._rx) >= _RX_LIMIT:
                self._paused = True
                self._loop.remove_reader(self._fd)
        else:  # EOF: stop watching the descriptor (it would stay readable) and tell read()
            self._eof = True
            self._loop.remove_reader(self._fd)
        waiter = self._rx_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait_writable(self) -> None:
        loop = asyncio.get_running_loop()
        fut = self._waiter = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_writer(self._fd, ready)
        try:
            await fut
        finally:
            if self._fd >= 0:
                loop.remove_writer(self._fd)
            self._waiter = None

    async def read(self) -> bytes:
        while not self._closed:
            if self._rx:
                data = bytes(self._rx)
                self._rx.clear()
                self.rx_ns = self._rx_last_ns
                if self._paused:
                    self._paused = False
                    self._loop.add_reader(self._fd, self._on_readable)
                return data
            if self._eof:
                return b""
            fut = self._rx_waiter = self._loop.create_future()
            try:
                await fut
            finally:
                self._rx_waiter = None
        return b""

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._closed:
                raise TransportClosed(f"{self.name}: closed")
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                await self._wait_writable()
            except OSError as exc:
                raise TransportClosed(f"{self.name}: write failed: {exc.strerror or exc}") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for waiter in (self._waiter, self._rx_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)  # wake a pending read or write; it sees _closed
        if self._port is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
            try:
                self._port.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("%s: close: %s", self.name, exc)
        self._fd = -1
