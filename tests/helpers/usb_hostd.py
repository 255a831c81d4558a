"""hostd's own parts serving USB pods in this process: the MQTT bridge, the hub and the
USB scanner over a given pyusb backend (tests/helpers/fake_usb.py), run as tasks."""
from __future__ import annotations

import asyncio

from hypnolum.host.config import Config, parse
from hypnolum.host.hub import Hub
from hypnolum.host.mqtt import MqttBridge
from hypnolum.host.transport.usb import UsbScanner

VID, PID = 0x303A, 0x4021  # what the pod's vendor interface presents (firmware/pod/usbvendor.py)


def usb_config(port: int, host_id: str, serial: str | None = None, **pods) -> Config:
    """A hostd config serving the pods' vendor interfaces (serial: only that pod id)."""
    return parse({
        "host": {"id": host_id},
        "mqtt": {"port": port, "keepalive": 5, "discovery": False},
        "usb": {"devices": [{"vid": VID, "pid": PID, "serial": serial}], "scan_interval_s": 0.1},
        "pods": {"heartbeat_timeout_s": 1.0, "ping_interval_s": 0.2, "connect_interval_s": 0.1,
                 "command_timeout_s": 0.5, "command_retries": 3, **pods},
    })


class UsbHostd:
    def __init__(self, cfg: Config, backend):
        self.bridge = MqttBridge(cfg)
        self.hub = Hub(cfg, self.bridge)
        self.scanner = UsbScanner(cfg.usb, self.hub.serve, backend=backend)
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> "UsbHostd":
        self.tasks = [asyncio.create_task(self.bridge.run()), asyncio.create_task(self.hub.serve_commands()),
                      asyncio.create_task(self.scanner.run())]
        return self

    async def __aexit__(self, *exc) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.bridge.close()
