"""Background scanning stays bounded when no pod answers (docs/transports.md, "Scanning").

BLE: each configured address has one supervisor; its attempts are spaced by the growing
backoff whether they run to their timeout (nobody on the air: bumble's link with no such
peripheral) or fail at once (the GATT client's own error), and neither ends the supervisor.
USB: the scanner enumerates the bus once per scan, asks nothing of a device whose VID:PID
is not configured, and reads a pod-like device's serial number once while it is plugged in
(tests/helpers/fake_usb.py, usb_devices.py: the libusb boundary). A whole hostd scanning all
three ways with no pod anywhere wakes a bounded number of times a second, counted at its
event loop's selector (epoll).
"""
from __future__ import annotations

import asyncio
import selectors

from bumble.link import LocalLink

from hypnolum.host.config import parse
from hypnolum.host.daemon import EXIT_STOPPED, run
from hypnolum.host.links import Boundaries
from hypnolum.host.transport import TransportError
from hypnolum.host.transport.ble import supervise
from hypnolum.host.transport.usb import UsbScanner

from helpers.ble_peer import BumbleGattLink, UnconnectedLink
from helpers.fake_usb import UsbBus
from helpers.usb_devices import OtherDevice
from helpers.usb_hostd import PID, VID
from helpers.wait import wait_until

MIN_S, MAX_S = 0.05, 0.4
SERIES = [MIN_S * 2 ** i for i in range(4)] + [MAX_S]  # the delays of five failed attempts in a row


def ble_config(connect_timeout_s: float):
    return parse({"host": {"id": "scan"}, "ble": {"reconnect_min_s": MIN_S, "reconnect_max_s": MAX_S,
                                                   "connect_timeout_s": connect_timeout_s}}).ble


async def attempts(address: str, cfg, factory, n: int, stable_s: float) -> list[tuple[float, float]]:
    """(start, end) of the supervisor's first ``n`` attempts, each expected to fail to open."""
    loop = asyncio.get_running_loop()
    spans: list[tuple[float, float]] = []

    async def serve(transport) -> None:  # as hostd's hub: a failed open ends the session
        start = loop.time()
        try:
            await transport.open()
        except TransportError:
            spans.append((start, loop.time()))
            return
        raise AssertionError(f"{transport.name} opened with nobody there")

    task = asyncio.create_task(supervise(address, cfg, serve, factory, stable_s=stable_s))
    try:
        await wait_until(lambda: len(spans) >= n or task.done(), timeout=30, what=f"{n} attempts")
        assert not task.done(), task  # the supervisor keeps going whatever the attempts raise
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return spans[:n]


def waits(spans: list[tuple[float, float]]) -> list[float]:
    return [b[0] - a[1] for a, b in zip(spans, spans[1:])]


async def test_ble_attempts_that_run_to_their_timeout_back_off_although_each_lasts_the_stable_time():
    link = LocalLink()  # no peripheral: bumble's connect waits until the transport gives up
    cfg = ble_config(connect_timeout_s=0.2)
    spans = await attempts("F0:F0:F0:F0:F0:0B", cfg, lambda a: BumbleGattLink(link, a + "/P"), 6, stable_s=0.1)
    assert all(end - start >= 0.2 for start, end in spans)  # each attempt lasted longer than stable_s
    assert sum(waits(spans)) >= sum(SERIES)  # yet the delays grew: the link was never up


class FailingLink(UnconnectedLink):
    """A GATT client whose stack fails at once, with its own error (not a TransportError)."""

    def __init__(self, address: str):
        self.address = address

    async def connect(self, timeout_s):
        raise RuntimeError("org.bluez.Error.NotReady: Resource Not Ready")


async def test_ble_attempts_that_fail_at_once_with_the_stacks_own_error_are_spaced_by_the_backoff():
    spans = await attempts("F0:F0:F0:F0:F0:0C", ble_config(connect_timeout_s=5), FailingLink, 6, stable_s=10)
    assert sum(waits(spans)) >= sum(SERIES)


async def test_usb_scanning_asks_nothing_of_other_devices_and_a_serial_number_once(tmp_path):
    bus = UsbBus(tmp_path)  # no emulated pods: a host's other devices and two pod-like ones
    others = [OtherDevice(bus, 0x046D, 0xC52B + i, serial=f"K{i}") for i in range(5)]
    other_pod = OtherDevice(bus, VID, PID, serial="pod-09", interface_class=0xFF)  # not the one configured
    ours = OtherDevice(bus, VID, PID, serial="pod-01", interface_class=0xFF)
    cfg = parse({"host": {"id": "scan"}, "usb": {"devices": [
        {"vid": VID, "pid": PID, "serial": "pod-01"}, {"vid": 0x303A, "pid": 0x4022}]}}).usb
    backend = bus.backend()
    scanner = UsbScanner(cfg, lambda transport: asyncio.sleep(0), backend=backend)
    try:
        scans = [await asyncio.to_thread(scanner.find) for _ in range(10)]
        assert [[d.address for d in found] for found in scans] == [[ours.address]] * 10
        assert backend.enumerations == 10  # one enumeration a scan, for both config entries
        assert [d.control_transfers for d in others] == [0] * 5  # not a configured VID:PID: nothing asked
        assert other_pod.string_reads == 2 and ours.string_reads == 2  # LANGIDs and the serial, once each

        # unplugged and plugged in again (a new address): asked once more
        ours.unplug()
        assert await asyncio.to_thread(scanner.find) == []
        again = OtherDevice(bus, VID, PID, serial="pod-01", interface_class=0xFF)
        assert [d.address for d in await asyncio.to_thread(scanner.find)] == [again.address]
        assert again.string_reads == 2 and other_pod.string_reads == 2
    finally:
        bus.close()


class CountingSelector(selectors.DefaultSelector):
    """The event loop's epoll, counting its waits: one per wake-up of the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.selects = 0

    def select(self, timeout=None):
        self.selects += 1
        return super().select(timeout)


IDLE_WAKEUPS_PER_S = 30  # the port scanner (2), the USB scanner and its thread (2), MQTT, logs, ...


def test_an_idle_hostd_scanning_three_ways_for_absent_pods_wakes_a_bounded_number_of_times(tmp_path, mosquitto):
    config = parse({
        "host": {"id": "scan"}, "mqtt": {"port": mosquitto.port},
        "serial": {"ports": [str(tmp_path / "*.tty")]},
        "usb": {"devices": [{"vid": VID, "pid": PID, "serial": "pod-01"}]},
        "ble": {"devices": ["C4:5B:BE:00:00:01", "C4:5B:BE:00:00:02"]},
    })
    air = LocalLink()  # no pod on the air
    bus = UsbBus(tmp_path / "usb")
    for i in range(5):
        OtherDevice(bus, 0x046D, 0xC520 + i)
    boundaries = Boundaries(gatt_link=lambda a: BumbleGattLink(air, a + "/P"), usb_backend=bus.backend())
    selector = CountingSelector()
    loop = asyncio.SelectorEventLoop(selector)

    async def wakeups_per_s() -> tuple[float, int]:
        stop = asyncio.Event()
        hostd = asyncio.create_task(run(config, stop, boundaries=boundaries))
        await asyncio.sleep(2.0)  # started: connected, first scans and BLE attempts under way
        n0, t0 = selector.selects, loop.time()
        await asyncio.sleep(3.0)
        rate = (selector.selects - n0) / (loop.time() - t0)
        stop.set()
        return rate, await hostd

    try:
        rate, status = loop.run_until_complete(wakeups_per_s())
    finally:
        loop.close()
        bus.close()
    assert status == EXIT_STOPPED
    assert rate < IDLE_WAKEUPS_PER_S, f"{rate:.0f} wake-ups a second with nothing to serve"
