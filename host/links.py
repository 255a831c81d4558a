"""The subsystems serving pods reached by BLE or USB (serial pods come from the port scanner)."""
from __future__ import annotations

from typing import Awaitable, Callable

from .config import Config

Serve = Callable[..., Awaitable[None]]


def ble_and_usb(config: Config, serve: Serve) -> dict[str, Callable[[], Awaitable[None]]]:
    """By subsystem name, a function running it until it ends: one supervisor per BLE
    address, one USB scanner; none when the config names no such pods."""
    runs: dict[str, Callable[[], Awaitable[None]]] = {}
    if config.ble.devices:
        from .transport.ble import supervise as ble_supervise

        for address in config.ble.devices:
            runs[f"ble {address}"] = lambda address=address: ble_supervise(address, config.ble, serve)
    if config.usb.devices:
        from .transport.usb import UsbScanner

        runs["usb scanner"] = UsbScanner(config.usb, serve).run
    return runs
