"""The shipped systemd unit, sd_notify, journald-friendly logs, graceful SIGTERM, udev rules, --check-config."""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hypnolum.host import daemon
from hypnolum.host import log as hostlog
from hypnolum.host.notify import Notifier

from helpers.fake_pod import FakePod
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

DEPLOY = Path(__file__).resolve().parent.parent / "host" / "deploy"
UNIT = DEPLOY / "hypnolum-hostd.service"
INSTALLED = "/opt/hypnolum/bin/hypnolum"  # the production venv of docs/install.md
P = "hypnolum/v1/pods"


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if not path:
        pytest.fail("systemd-analyze is missing: `make setup` installs the Debian package systemd")
    return path


def _installed_unit(tmp_path: Path) -> Path:
    """The unit as installed, with ExecStart pointing at this checkout's hypnolum."""
    exe = Path(sys.executable).with_name("hypnolum")
    unit = tmp_path / "hypnolum-hostd.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(exe)))
    return unit


def test_unit_exposure_is_at_most_2(tmp_path):
    unit = _installed_unit(tmp_path)
    out = subprocess.run([_analyze(), "security", "--offline=true", "--threshold=20", str(unit)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout)
    assert m, out.stdout[-2000:] + out.stderr
    assert float(m.group(1)) <= 2.0 and out.returncode == 0, out.stdout[-3000:]


def test_unit_verifies_clean(tmp_path):
    unit = _installed_unit(tmp_path)
    out = subprocess.run([_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "hypnolum-hostd.service" not in out.stderr, out.stderr  # no warning about our unit


def test_unit_has_the_promised_settings():
    text = UNIT.read_text()
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["Type"] == ["notify"] and settings["Restart"] == ["always"]
    assert settings["DynamicUser"] == ["yes"] and "dialout" in settings["SupplementaryGroups"][0].split()
    assert settings["ProtectSystem"] == ["strict"] and settings["StateDirectory"] == ["hypnolum"]
    assert "PrivateDevices" not in settings  # it would hide the pods' ttys
    assert any("ttyUSB" in v for v in settings["DeviceAllow"]) and any("ttyACM" in v for v in settings["DeviceAllow"])
    assert "AF_BLUETOOTH" in settings["RestrictAddressFamilies"][0].split()
    assert "WatchdogSec" in settings
    # it runs the hypnolum of the production install that docs/install.md sets up
    assert settings["ExecStartPre"] == [f"{INSTALLED} hostd --check-config /etc/hypnolum/hostd.toml"]
    assert settings["ExecStart"] == [f"{INSTALLED} hostd --config /etc/hypnolum/hostd.toml"]
    install_doc = (DEPLOY.parent.parent / "docs" / "install.md").read_text()
    assert f"python3 -m venv {INSTALLED.removesuffix('/bin/hypnolum')}" in install_doc
    # /etc/hypnolum stays root's (systemd never chowns a ConfigurationDirectory): hostd reads it as group hypnolum
    assert "hypnolum" in settings["SupplementaryGroups"][0].split() and settings["ConfigurationDirectoryMode"] == ["0750"]
    assert "groupadd --system hypnolum" in install_doc and "install -d -m 0750 -g hypnolum /etc/hypnolum" in install_doc


def test_udev_names_match_the_example_config_and_the_units_group():
    rules = (DEPLOY / "60-hypnolum.rules").read_text()
    example = tomllib.loads((DEPLOY / "hostd.example.toml").read_text())
    symlinks = set(re.findall(r'SYMLINK\+="([^"$%]+)', rules))
    assert symlinks == {"hypnolum/pod-"}
    assert example["serial"]["ports"] == ["/dev/hypnolum/pod-*"]
    groups = set(re.findall(r'GROUP="(\w+)"', rules))
    assert groups <= set(re.search(r"^SupplementaryGroups=(.*)$", UNIT.read_text(), re.M).group(1).split())
    for line in rules.splitlines():  # every rule matches on vendor and product or on our own marker
        if line and not line.startswith(("#", "LABEL", "ACTION")):
            assert "idVendor" in line or 'ENV{HYPNOLUM_POD}=="1"' in line, line


def test_check_config_prints_each_error_with_its_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[mqtt]\nport = 0\ntls = false\nca_file = "/nonexistent/ca.pem"\n[serial]\nbaudrate = -1\n'
                   '[usb]\ndevices = [{vid = 70000, pid = 1}]\n[pods]\nstop_fade_ms = "slow"\n')
    assert daemon.main(["--check-config", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    keys = [line.split(": ")[1] for line in err]
    assert {"mqtt.port", "mqtt.ca_file", "serial.baudrate", "usb.devices.0.vid", "pods.stop_fade_ms"} <= set(keys), err
    # the shipped example is complete apart from the secret files an installation provides
    out = subprocess.run([sys.executable, "-m", "hypnolum", "hostd", "--check-config", str(DEPLOY / "hostd.example.toml")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert sorted(line.split(": ")[1] for line in out.stderr.splitlines()) == ["mqtt.ca_file", "mqtt.password_file"]


def test_cross_field_errors_name_the_section(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[mqtt]\npassword = "x"\n')
    assert daemon.main(["--check-config", str(bad)]) == 2
    assert "mqtt: Value error, a password needs a username" in capsys.readouterr().err


def test_log_lines_one_event_each_with_journal_priority():
    record = logging.LogRecord("hypnolum.x", logging.WARNING, __file__, 1, "two\nlines", None, None)
    assert hostlog.OneLineFormatter(journal=True).format(record) == "<4>hypnolum.x: two | lines"
    assert hostlog.OneLineFormatter(journal=False).format(record) == "WARNING hypnolum.x: two | lines"
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("h", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = hostlog.OneLineFormatter(journal=True).format(record)
    assert "\n" not in line and line.startswith("<3>h: failed | Traceback") and "ValueError: boom" in line
    st = os.fstat(sys.stderr.fileno())
    assert hostlog.under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert not hostlog.under_journal({"JOURNAL_STREAM": "1:2"}) and not hostlog.under_journal({})


def test_notifier_outside_systemd_is_silent():
    n = Notifier({})
    assert not n.enabled and n.watchdog_s is None and n.notify(READY=1) is False
    assert Notifier({"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000"}).watchdog_s == 1.0


class NotifySocket:
    """What systemd does for Type=notify: a datagram socket whose path goes in NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def seen(self, key: str, value: str | None = None) -> list[dict[str, str]]:
        return [m for m in self.drain() if key in m and (value is None or m[key] == value)]


@pytest.mark.broker
async def test_hostd_under_a_notify_socket_reports_ready_status_watchdog_and_stops_safely(tmp_path, mosquitto):
    notify = NotifySocket(tmp_path / "notify.sock")
    h = Hostd(tmp_path, mosquitto.port, extra="stop_fade_ms = 300\n",
              env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})
    async with Watcher(mosquitto.port) as watch:
        h.start()
        try:
            await wait_until(lambda: notify.seen("READY", "1"), timeout=10, what="READY=1")
            await wait_until(lambda: len(notify.seen("WATCHDOG", "1")) >= 3, timeout=5, what="three watchdog pings")
            pod = FakePod(h.pods_dir / "pod0.tty", pod_id="pod-a")
            pod.plug()
            await wait_until(lambda: notify.seen("STATUS", "1 pod(s) online of 1; broker connected"), timeout=10,
                             what="STATUS with the pod online")
            await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "online", what="pod online")
            h.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(h.proc.wait, 15) == 0
            assert notify.seen("STOPPING", "1")
            off = [f for _seq, f in pod.scenes if f["effect"] == "off"]
            assert off and off[-1]["transition_ms"] == 300, pod.scenes  # faded to safe before the link closed
            await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "offline", what="pod offline")
            assert watch.text("hypnolum/v1/hosts/test-host/availability") == "offline"
            assert "Traceback" not in h.log_text()
            pod.unplug()
        finally:
            h.kill()


async def test_watchdog_pings_come_from_the_live_loop_and_stop_works_without_a_broker(tmp_path):
    from hypnolum.broker import free_port

    notify = NotifySocket(tmp_path / "notify.sock")
    h = Hostd(tmp_path, free_port(),  # nothing listens there: hostd keeps retrying, and is still READY
              env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"})
    h.start()
    try:
        await wait_until(lambda: notify.seen("READY", "1"), timeout=10, what="READY=1")
        assert notify.seen("STATUS", "0 pod(s) online of 0; broker disconnected")
        await wait_until(lambda: len(notify.seen("WATCHDOG", "1")) >= 3, timeout=5, what="pings")
        h.proc.send_signal(signal.SIGSTOP)  # a hung process: the pings stop, so systemd would restart it
        await asyncio.sleep(0.2)
        n = len(notify.seen("WATCHDOG", "1"))
        await asyncio.sleep(0.6)
        assert len(notify.seen("WATCHDOG", "1")) == n
        h.proc.send_signal(signal.SIGCONT)
        await wait_until(lambda: len(notify.seen("WATCHDOG", "1")) >= n + 2, timeout=5, what="pings again")
        h.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(h.proc.wait, 15) == 0
        assert notify.seen("STOPPING", "1")
        assert "Traceback" not in h.log_text()
    finally:
        h.kill()
