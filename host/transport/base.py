"""The transport contract: a byte pipe to one pod.

Backends (serial today; BLE and USB later) subclass ``Transport``. A session
only ever sees this interface, so the emulator's pty, a USB CDC port and a
BLE UART look the same to it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod


class TransportError(ConnectionError):
    """The transport could not be opened or failed; the message names it."""


class TransportClosed(TransportError):
    """The link is gone (port closed, device unplugged, I/O error)."""


class Transport(ABC):
    """A bidirectional byte stream to one pod.

    Life cycle: ``open()`` once, then any number of ``read()``/``write()``,
    then ``close()``. A transport is not reopened; make a new one.
    """

    #: Human-readable, stable name of the endpoint (e.g. the port path).
    name: str
    #: CLOCK_REALTIME ns when the bytes of the last ``read()`` arrived, as early as the
    #: backend can tell (0: not known). PONG's receive instant, for the pod clock.
    rx_ns: int = 0

    @abstractmethod
    async def open(self) -> None:
        """Open the endpoint. Raises ``TransportError`` if it cannot."""

    @abstractmethod
    async def read(self) -> bytes:
        """Wait for and return the next bytes received (at least one byte).

        Returns ``b""`` exactly once the link has ended for good (unplugged,
        closed, I/O error, or ``close()`` called): that is the clean end of a
        session, never an exception.
        """

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Send all of ``data``, waiting while the OS buffer is full.

        Raises ``TransportClosed`` if the link has ended.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release the endpoint. Idempotent; a pending ``read()`` returns ``b""``."""

    async def __aenter__(self) -> "Transport":
        await self.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
