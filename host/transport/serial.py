"""Serial transport: a pod on a UART, USB CDC port or the emulator's pty.

pyserial opens and configures the port (raw mode, baud rate, exclusive lock);
the bytes then move through the event loop's reader/writer callbacks on the
non-blocking file descriptor, so no thread is involved. An unplugged device
or a pty whose other side closed shows up as EIO/EOF on read, which ends the
session cleanly (``read()`` returns ``b""``).
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


class SerialTransport(Transport):
    def __init__(self, path: str, baudrate: int = 921600):
        self.name = path
        self.baudrate = baudrate
        self._port: serial.Serial | None = None
        self._fd = -1
        self._closed = False
        self._waiter: asyncio.Future | None = None
        self.rx_ns = 0  # CLOCK_REALTIME when the bytes of the last read() were seen to arrive

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

    async def _wait(self, writing: bool) -> None:
        loop = asyncio.get_running_loop()
        fut = self._waiter = loop.create_future()

        def ready() -> None:
            if not writing:
                self.rx_ns = time.time_ns()  # as the loop sees the fd readable, not after decoding
            if not fut.done():
                fut.set_result(None)

        add, remove = (loop.add_writer, loop.remove_writer) if writing else (loop.add_reader, loop.remove_reader)
        add(self._fd, ready)
        try:
            await fut
        finally:
            if self._fd >= 0:
                remove(self._fd)
            self._waiter = None

    async def read(self) -> bytes:
        waited = False
        while not self._closed:
            try:
                data = os.read(self._fd, _READ_SIZE)  # b"" is EOF
            except BlockingIOError:
                await self._wait(writing=False)
                waited = True
                continue
            except OSError as exc:
                log.debug("%s: read ended: %s", self.name, exc)  # EIO: the other side is gone
                return b""
            if not waited:  # the bytes were already there: they arrived no later than now
                self.rx_ns = time.time_ns()
            return data
        return b""

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._closed:
                raise TransportClosed(f"{self.name}: closed")
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                await self._wait(writing=True)
            except OSError as exc:
                raise TransportClosed(f"{self.name}: write failed: {exc.strerror or exc}") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)  # wake a pending read; it sees _closed
        if self._port is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
            try:
                self._port.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("%s: close: %s", self.name, exc)
        self._fd = -1
