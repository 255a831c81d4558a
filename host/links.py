"""The subsystems serving pods reached by BLE or USB (serial pods come from the port scanner),
and the OS boundaries they reach the pods through."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from .config import Config

Serve = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Boundaries:
    """Where the BLE and USB transports meet the OS. None: the production ones, BlueZ through
    bleak (``BleakGattLink``) and libusb-1.0 through pyusb's default backend. A bench or test
    passes others at the same place: a ``GattLink`` factory by address, a pyusb ``IBackend``."""

    gatt_link: Callable[[str], Any] | None = None
    usb_backend: Any = None


def ble_and_usb(config: Config, serve: Serve,
                boundaries: Boundaries = Boundaries()) -> dict[str, Callable[[], Awaitable[None]]]:
    """By subsystem name, a function running it until it ends: one supervisor per BLE
    address, one USB scanner; none when the config names no such pods."""
    runs: dict[str, Callable[[], Awaitable[None]]] = {}
    if config.ble.devices:
        from .transport.ble import BleakGattLink
        from .transport.ble import supervise as ble_supervise

        link = boundaries.gatt_link or BleakGattLink
        for address in config.ble.devices:
            runs[f"ble {address}"] = lambda address=address: ble_supervise(address, config.ble, serve, link)
    if config.usb.devices:
        from .transport.usb import UsbScanner

        runs["usb scanner"] = UsbScanner(config.usb, serve, backend=boundaries.usb_backend).run
    return runs
