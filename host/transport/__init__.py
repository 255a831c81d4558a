"""Transports to pods. Backends are chosen by name and imported lazily."""
from __future__ import annotations

import importlib

from .base import Transport, TransportClosed, TransportError

__all__ = ["Transport", "TransportClosed", "TransportError", "BACKENDS", "create"]

# name -> "module:class"; a backend's dependencies load only when it is used
BACKENDS = {
    "serial": "hypnolum.host.transport.serial:SerialTransport",
    "ble": "hypnolum.host.transport.ble:BleTransport",
    "usb": "hypnolum.host.transport.usb:UsbTransport",
}


def create(kind: str, *args, **kwargs) -> Transport:
    try:
        module, cls = BACKENDS[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown transport {kind!r}; known: {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module), cls)(*args, **kwargs)
