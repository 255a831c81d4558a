"""Supervisors for pods reached by BLE or USB (serial pods come from the port scanner)."""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from .config import Config

log = logging.getLogger(__name__)


def start_ble_and_usb(config: Config, serve: Callable[..., Awaitable[None]]) -> list[asyncio.Task]:
    tasks = []
    if config.ble.devices:
        from .transport.ble import supervise as ble_supervise

        for address in config.ble.devices:
            tasks.append(asyncio.create_task(ble_supervise(address, config.ble, serve), name=f"ble {address}"))
    if config.usb.devices:
        from .transport.usb import UsbScanner

        tasks.append(asyncio.create_task(UsbScanner(config.usb, serve).run(), name="usb scanner"))
    return tasks
