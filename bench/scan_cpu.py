"""hostd's CPU while it scans for pods that are not there: serial, USB and BLE.

Runs a real hostd (daemon.run: its MQTT bridge against a private mosquitto, its
port scanner, USB scanner and BLE supervisors) in a child process, with no pod
anywhere, and measures its CPU time (user + system, from /proc through psutil)
over a window, per scenario:

* serial: ``[serial] ports`` a glob matching nothing, or matching ttys that are
  not pods (ptys whose other end reads and never answers);
* USB: hostd's USB scanner on the fake libusb backend (tests/helpers/fake_usb.py,
  the pyusb ``IBackend`` at libusb's place) with a bus of devices that are not pods
  (tests/helpers/usb_devices.py: keyboards and the like, plus two with the pod's
  VID:PID but other serial numbers) and configured pods that are absent;
* BLE: one supervisor per configured address on bumble's link with no such
  peripheral (tests/helpers/ble_peer.py ``BumbleGattLink`` at BlueZ's place):
  every attempt runs until ``ble.connect_timeout_s``.

The child counts BLE connection attempts and USB enumerations at those boundaries,
so the added cost is printed per USB scan and per BLE attempt, and per absent BLE
address at the default backoff. The fake bus's own bookkeeping (globbing its
directory for emulated pods) runs in hostd's process and is counted: the USB
figures are an upper bound for libusb, which answers from its cache.

    .venv/bin/python bench/scan_cpu.py [--window 60] [--scenarios idle,serial,usb,usb-fast,ble,ble-fast,all]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hypnolum.broker import PrivateBroker  # noqa: E402
from hypnolum.procs import die_with_parent  # noqa: E402

OTHER_DEVICES = 20  # devices on the USB bus that are not pods
BLE_ADDRESSES = 8  # configured pods that never answer
TTYS = 8  # ttys the serial glob matches that are not pods
WARMUP_S = 5.0


@dataclass
class Scenario:
    name: str
    ttys: int = 0
    usb: dict = field(default_factory=dict)  # [usb] keys; empty: no USB pods configured
    ble: dict = field(default_factory=dict)  # [ble] keys; empty: no BLE pods configured
    what: str = ""


def scenarios() -> dict[str, Scenario]:
    absent_usb = {"devices": [{"vid": 0x303A, "pid": 0x4021, "serial": f"pod-{i:02d}"} for i in range(1, 5)]}
    absent_ble = {"devices": [f"C4:5B:BE:00:00:{i:02X}" for i in range(1, BLE_ADDRESSES + 1)]}
    return {s.name: s for s in [
        Scenario("idle", what="serial glob matching nothing; no USB or BLE pods configured"),
        Scenario("serial", ttys=TTYS, what=f"serial glob matching {TTYS} ttys that are not pods"),
        Scenario("usb", usb=absent_usb, what=f"USB at the default 1 scan/s: {OTHER_DEVICES} other devices, "
                 "2 pod-like ones, 4 absent pods configured"),
        Scenario("usb-fast", usb={**absent_usb, "scan_interval_s": 0.1}, what="the same at 10 scans/s"),
        Scenario("ble", ble=absent_ble, what=f"BLE: {BLE_ADDRESSES} absent addresses at the defaults "
                 "(backoff 1 s doubling to 30 s, 10 s connect timeout)"),
        Scenario("ble-fast", ble={**absent_ble, "reconnect_min_s": 0.5, "reconnect_max_s": 0.5,
                                  "connect_timeout_s": 1.0},
                 what=f"BLE: {BLE_ADDRESSES} absent addresses, attempts back to back (1 s each, 0.5 s apart)"),
        Scenario("all", ttys=TTYS, usb=absent_usb, ble=absent_ble, what="all three at the defaults together"),
    ]}


def toml(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + "}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def hostd_config(path: Path, port: int, ports_glob: str, sc: Scenario) -> None:
    lines = ['[host]', 'id = "scan-bench"', '[mqtt]', f'port = {port}', '[serial]', f'ports = [{toml(ports_glob)}]']
    for section, keys in (("usb", sc.usb), ("ble", sc.ble)):
        if keys:
            lines.append(f"[{section}]")
            lines += [f"{k} = {toml(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")


# -- the child: hostd with bumble's link and the fake libusb at its OS boundaries -------
async def run_hostd(config_path: Path, bus_root: Path, stats_path: Path) -> int:
    from bumble.link import LocalLink

    from hypnolum.host import log as logsetup
    from hypnolum.host.config import load
    from hypnolum.host.daemon import run
    from hypnolum.host.links import Boundaries

    from helpers.ble_peer import BumbleGattLink
    from helpers.fake_usb import UsbBus
    from helpers.usb_devices import OtherDevice

    logsetup.setup("WARNING")
    air = LocalLink()  # no pod on the air
    bus = UsbBus(bus_root)  # no emulated pod under bus_root
    for i in range(OTHER_DEVICES):
        OtherDevice(bus, 0x046D, 0xC500 + i, serial=f"other-{i}")
    for serial in ("pod-98", "pod-99"):  # the pod's VID:PID, not a configured serial number
        OtherDevice(bus, 0x303A, 0x4021, serial=serial, interface_class=0xFF)
    backend = bus.backend()
    attempts = 0

    def gatt_link(address: str) -> BumbleGattLink:
        nonlocal attempts
        attempts += 1
        return BumbleGattLink(air, address + "/P")

    async def report() -> None:
        while True:
            stats_path.write_text(json.dumps({"ble_attempts": attempts, "usb_enumerations": backend.enumerations}))
            await asyncio.sleep(0.5)

    reporter = asyncio.create_task(report())
    try:
        return await run(load(config_path), boundaries=Boundaries(gatt_link=gatt_link, usb_backend=backend))
    finally:
        reporter.cancel()
        bus.close()


# -- the parent --------------------------------------------------------------------------
class Ttys:
    """ttys that are not pods: ptys whose other end reads what hostd sends and never answers."""

    def __init__(self, directory: Path, n: int):
        self.masters: list[int] = []
        self.slaves: list[int] = []
        for i in range(n):
            master, slave = os.openpty()
            self.masters.append(master)
            self.slaves.append(slave)
            (directory / f"other{i}.tty").symlink_to(os.ttyname(slave))
        self.received = 0
        self._stop = False
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop and self.masters:
            ready, _, _ = select.select(self.masters, [], [], 0.2)
            for fd in ready:
                try:
                    self.received += len(os.read(fd, 4096))
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        for fd in self.masters + self.slaves:
            os.close(fd)


def read_stats(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"ble_attempts": 0, "usb_enumerations": 0}


def measure(sc: Scenario, window: float, tmp: Path, port: int) -> dict:
    work = tmp / sc.name
    ports_dir, bus_root = work / "ttys", work / "usb"
    ports_dir.mkdir(parents=True)
    bus_root.mkdir()
    ttys = Ttys(ports_dir, sc.ttys) if sc.ttys else None
    config, stats, log = work / "hostd.toml", work / "stats.json", work / "hostd.log"
    hostd_config(config, port, str(ports_dir / "*.tty"), sc)
    with open(log, "wb") as err:
        child = subprocess.Popen([sys.executable, __file__, "--hostd", str(config), "--bus-root", str(bus_root),
                                  "--stats", str(stats)], stdout=subprocess.DEVNULL, stderr=err,
                                 preexec_fn=die_with_parent())
    try:
        proc = psutil.Process(child.pid)
        time.sleep(WARMUP_S)  # started, connected to the broker, first scans and attempts under way
        if child.poll() is not None:
            raise SystemExit(f"{sc.name}: hostd exited ({child.returncode}):\n{log.read_text()[-3000:]}")
        c0, s0, t0 = proc.cpu_times(), read_stats(stats), time.monotonic()
        time.sleep(window)
        c1, s1, t1 = proc.cpu_times(), read_stats(stats), time.monotonic()
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if ttys:
            ttys.close()
    dt = t1 - t0
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    warnings = [line for line in log.read_text().splitlines() if "WARNING" in line or "ERROR" in line]
    return {"scenario": sc.name, "what": sc.what, "seconds": dt, "cpu_s": cpu, "core_pct": 100 * cpu / dt,
            "ble_attempts": s1["ble_attempts"] - s0["ble_attempts"],
            "usb_scans": s1["usb_enumerations"] - s0["usb_enumerations"],
            "tty_bytes": ttys.received if ttys else 0, "log_lines": len(warnings)}


def report(rows: dict[str, dict]) -> None:
    print(f"{'scenario':9} | {'hostd CPU, % of a core':>22} | {'CPU s':>6} | {'USB scans':>9} | "
          f"{'BLE attempts':>12} | what")
    for r in rows.values():
        print(f"{r['scenario']:9} | {r['core_pct']:22.3f} | {r['cpu_s']:6.2f} | {r['usb_scans']:9d} | "
              f"{r['ble_attempts']:12d} | {r['what']}")
    idle = rows.get("idle")
    if idle is None:
        return
    base = idle["cpu_s"] / idle["seconds"]  # CPU s per s with nothing to find

    def added(r: dict) -> float:
        return r["cpu_s"] - base * r["seconds"]

    if (r := rows.get("serial")) is not None:
        print(f"serial: {100 * added(r) / r['seconds'] / TTYS:.3f} % of a core per matched tty that is not a pod")
    for name in ("usb-fast", "usb"):
        if (r := rows.get(name)) is not None and r["usb_scans"]:
            print(f"USB ({name}): {1000 * added(r) / r['usb_scans']:.2f} ms CPU per scan "
                  f"({OTHER_DEVICES} other devices + 2 pod-like on the bus)")
    for name in ("ble-fast", "ble"):
        if (r := rows.get(name)) is not None and r["ble_attempts"]:
            per = added(r) / r["ble_attempts"]
            steady = per / (30.0 + 10.0)  # defaults: at most one attempt per reconnect_max_s + connect_timeout_s
            print(f"BLE ({name}): {1000 * per:.1f} ms CPU per attempt; at the defaults, once the backoff "
                  f"reached 30 s, {100 * steady:.4f} % of a core per absent address")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=60.0, help="seconds measured per scenario")
    ap.add_argument("--scenarios", default=",".join(scenarios()), help="comma-separated: " + " ".join(scenarios()))
    ap.add_argument("--hostd", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--bus-root", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hostd:
        sys.exit(asyncio.run(run_hostd(args.hostd, args.bus_root, args.stats)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the children on SIGTERM too
    table = scenarios()
    names = args.scenarios.split(",")
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown scenarios: {unknown} (known: {list(table)})")
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="scan-cpu-") as tmp, PrivateBroker(Path(tmp) / "broker") as broker:
        for name in names:
            rows[name] = measure(table[name], args.window, Path(tmp), broker.port)
            print(json.dumps(rows[name]), file=sys.stderr, flush=True)
    print(f"hostd CPU time (user + system, /proc via psutil) over {args.window:.0f} s windows, no pod anywhere:")
    report(rows)


if __name__ == "__main__":
    main()
