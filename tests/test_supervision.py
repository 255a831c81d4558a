"""hostd's supervised task tree (host/supervisor.py, host/daemon.py): a failing handler costs one
message, a lost broker is reconnected with backoff by every connection, a failed subsystem is
restarted and one that keeps failing ends hostd non-zero, bad input floods the log no more,
the exit status says why hostd ended, and the systemd unit restarts it after any exit it did
not ask for."""
from __future__ import annotations

import asyncio
import itertools
import logging
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hypnolum.host import log as hostlog
from hypnolum.host.supervisor import Backoff, Supervisor

from helpers.fake_pod import FakePod
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

UNIT = Path(__file__).resolve().parent.parent / "host" / "deploy" / "hypnolum-hostd.service"
P = "hypnolum/v1/pods"
HOST_STATE = "hypnolum/v1/hosts/test-host/state"
GOOD = {"scene": {"effect": "solid", "color": [10, 20, 30], "brightness": 0.5}}


class PipedHostd(Hostd):
    """hostd whose log goes through a pipe (a file size limit on hostd does not reach it)."""

    def start(self) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "hypnolum", "hostd", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def log_text(self) -> str:
        return "\n".join(self.lines)


async def ask(watch: Watcher, topic: str, payload) -> dict:
    """Publish on ``topic``; the next message on ``topic/result``."""
    results = watch.history[f"{topic}/result"]
    before = len(results)
    await watch.publish(topic, payload)
    await wait_until(lambda: len(results) > before, timeout=10, what=f"a result on {topic}/result")
    return watch.all_json(f"{topic}/result")[before]


@pytest.fixture
async def watch(mosquitto):
    async with Watcher(mosquitto.port) as w:
        yield w


# -- a handler's failure is contained to its message ------------------------------------------
@pytest.mark.broker
async def test_a_handler_that_fails_costs_only_its_message(tmp_path, mosquitto, watch):
    """The participant code is written into the open recording's header. With hostd's file size
    limit lowered (RLIMIT_FSIZE, an OS boundary) that write fails: the participant message gets
    an error result naming the failure, which is counted and logged, and hostd goes on."""
    rec = tmp_path / "rec"
    hostd = PipedHostd(tmp_path, mosquitto.port, extra=f'[recorder]\nenabled = true\ndir = "{rec}"\n')
    pod = FakePod(hostd.pods_dir / "pod-a.tty", pod_id="pod-a")
    pod.plug()
    hostd.start()
    pid = hostd.proc.pid
    try:
        await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "online", timeout=10, what="pod online")
        await wait_until(lambda: list(rec.glob("pod-a_*.bdf")), timeout=10, what="the recording")
        limits = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, limits[1]))  # no write past the file's first byte
        try:
            result = await ask(watch, f"{P}/pod-a/participant", {"participant": "P017"})
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, limits)
        assert result["ok"] is False and result["field"] is None, result
        assert result["error"].startswith("hostd failed handling this message: OSError: [Errno 27] File too large")
        line = next(x for x in hostd.lines if "participant handler failed" in x)
        assert line.startswith(f"ERROR hypnolum.host.supervisor: participant handler failed on {P}/pod-a/participant:")
        assert "Traceback" in line and "set_participant" in line  # the traceback, on the same line
        await wait_until(lambda: (watch.json(HOST_STATE) or {}).get("handler_failures") == {"participant": 1},
                         what="the failure counted in the host state")
        # hostd goes on: the next messages are served
        assert hostd.proc.poll() is None
        assert (await ask(watch, f"{P}/pod-a/set", {"id": "after", **GOOD}))["ok"] is True
        assert await ask(watch, f"{P}/pod-a/participant", {"participant": "P018"}) == {"ok": True, "participant": "P018"}
        assert hostd.proc.poll() is None and not any("ended unexpectedly" in x for x in hostd.lines)
    finally:
        hostd.kill()
        pod.unplug()


# -- a lost broker: every connection reconnects with the one backoff policy -----------------------
@pytest.mark.broker
async def test_a_broker_restart_is_ridden_out_with_backoff_by_every_connection(tmp_path, mosquitto):
    hostd = Hostd(tmp_path, mosquitto.port)
    pod = FakePod(hostd.pods_dir / "pod-a.tty", pod_id="pod-a")
    pod.plug()
    hostd.start()
    try:
        async with Watcher(mosquitto.port) as watch:
            await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "online", timeout=10, what="online")
            await watch.client.publish("hypnolum/v1/circles/c1/definition", b'{"pods": ["pod-a"]}', qos=1, retain=True)
            await asyncio.sleep(0.3)
        mosquitto.stop()
        await asyncio.sleep(4.0)  # the broker stays away: each connection backs off 0.2, 0.4, 0.8, then 1.0 s
        mosquitto.start()
        async with Watcher(mosquitto.port) as watch:
            await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "online", timeout=10,
                             what="the pod online again")
            assert (await ask(watch, f"{P}/pod-a/set", {"id": "back", **GOOD})) == {"id": "back", "ok": True, "ack": "ok"}
            await watch.client.publish("hypnolum/v1/circles/c1/definition", b"", qos=1, retain=True)
        log = hostd.log_text()
        for name in ("main", "circles", "pod pod-a availability"):
            delays = [float(d) for d in re.findall(rf"MQTT {name} connection to 127\.0\.0\.1:{mosquitto.port}: "
                                                   rf"[^\n]*; retrying in ([\d.]+) s", log)]
            assert delays[:4] == [0.2, 0.4, 0.8, 1.0], (name, delays)  # doubling up to mqtt.backoff_max_s
            assert set(delays[4:]) <= {1.0}, (name, delays)
        assert hostd.proc.poll() is None
        assert "ended unexpectedly" not in log and "Traceback" not in log
    finally:
        hostd.kill()
        pod.unplug()


# -- a subsystem that fails is restarted with backoff; one that keeps failing ends hostd ----------
async def test_a_failed_subsystem_is_restarted_with_backoff_and_given_up_on_after_its_budget(tmp_path, caplog):
    """A subsystem whose resource is missing (here: a file it reads) fails; it is restarted after
    doubling delays while the file is missing, goes on once the file is back, and a subsystem
    failing more often than the budget allows sets the supervisor's failure."""
    needed = tmp_path / "needed"
    runs: list[float] = []

    async def reads_its_file() -> None:
        runs.append(time.monotonic())
        needed.read_text()  # FileNotFoundError while the file is missing
        await asyncio.Event().wait()

    sup = Supervisor(Backoff(0.05, 0.2), budget=3, window_s=30.0)
    with caplog.at_level(logging.ERROR):
        async with asyncio.TaskGroup() as tg:
            task = sup.start(tg, "reader", reads_its_file)
            await wait_until(lambda: len(runs) == 3, timeout=5, what="two restarts")
            needed.write_text("x")  # the third run has failed too; the fourth finds the file
            await wait_until(lambda: len(runs) == 4, timeout=5, what="the third restart")
            await asyncio.sleep(0.4)
            assert len(runs) == 4 and not task.done() and sup.failure is None  # running again
            task.cancel()
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert 0.05 <= gaps[0] < 0.09 and 0.1 <= gaps[1] < 0.14 and 0.2 <= gaps[2] < 0.24, gaps  # doubling, at most 0.2
    assert sup.restarts == {"reader": 3}
    restarts = [r.getMessage() for r in caplog.records if "restarting it in" in r.getMessage()]
    assert restarts[0].startswith("subsystem reader ended unexpectedly (FileNotFoundError: [Errno 2] No such file")
    assert restarts[0].endswith("restarting it in 0.05 s (restart 1)") and caplog.records[0].exc_info

    needed.unlink()
    sup = Supervisor(Backoff(0.01, 0.02), budget=3, window_s=30.0)
    async with asyncio.TaskGroup() as tg:
        sup.start(tg, "reader", reads_its_file)
        await asyncio.wait_for(sup.failed.wait(), 5)
    assert "subsystem reader failed 4 times within 30 s, the last time: FileNotFoundError" in str(sup.failure)


# -- bad input floods the log no more ------------------------------------------------------------
@pytest.mark.broker
async def test_a_flood_of_bad_commands_logs_a_bounded_number_of_lines_and_a_summary(tmp_path, mosquitto, watch):
    hostd = Hostd(tmp_path, mosquitto.port)
    hostd.start()
    try:
        await wait_until(lambda: watch.text("hypnolum/v1/hosts/test-host/availability") == "online", what="hostd")
        n = 300
        for _ in range(n):
            await watch.client.publish(f"{P}/nobody/set", b"{not json", qos=1)
        await wait_until(lambda: len(watch.history[f"{P}/nobody/set/result"]) >= n, timeout=20, what="every answer")
        await wait_until(lambda: "more like this suppressed" in hostd.log_text(), timeout=15, what="the summary")
        lines = [x for x in hostd.log_text().splitlines() if "set for pod nobody failed" in x]
        assert len(lines) == hostlog.BURST + 1, len(lines)  # the lines of the first window, then one summary
        summary = lines[-1]
        m = re.match(r"WARNING hypnolum\.host\.setcommands: (\d+) more like this suppressed in 10 s, the last: "
                     r"set for pod nobody failed: invalid JSON", summary)
        assert m and int(m.group(1)) == n - hostlog.BURST, summary
        await wait_until(lambda: (watch.json(HOST_STATE) or {}).get("bad_commands") == n, what="all counted")
    finally:
        hostd.kill()


def test_the_rate_limit_counts_per_kind_and_summarizes_when_the_window_ends():
    now = [0.0]
    limit = hostlog.RateLimit(burst=2, window_s=10.0, clock=lambda: now[0])
    out: list[str] = []
    limit.emit = lambda record: out.append(record.getMessage())

    def log(msg: str, *args) -> bool:
        record = logging.LogRecord("hypnolum.x", logging.WARNING, __file__, 1, msg, args, None)
        passed = limit.filter(record)
        if passed:
            out.append(record.getMessage())
        return passed

    assert [log("bad %s", i) for i in range(5)] == [True, True, False, False, False]
    assert log("other %s", 1)  # another kind has its own budget
    now[0] = 10.5
    assert log("bad %s", 9)  # a new window: first the summary of the last one
    assert out == ["bad 0", "bad 1", "other 1", "3 more like this suppressed in 10 s, the last: bad 4", "bad 9"]
    log("bad %s", 10)
    log("bad %s", 11)
    now[0] = 21.0
    limit.flush()  # the periodic call: windows over are summed up even without a new line
    assert out[-1] == "1 more like this suppressed in 10 s, the last: bad 11" and limit.suppressed == 4


# -- client ids -----------------------------------------------------------------------------------
@pytest.mark.broker
async def test_pods_with_long_ids_get_availability_links_of_their_own(tmp_path, mosquitto, watch):
    """Two pods whose 64-character ids differ only at the end: each availability link has a
    client id of its own (at most 64 characters), so neither knocks the other off the broker."""
    ids = ["p" * 60 + "0001", "p" * 60 + "0002"]
    hostd = Hostd(tmp_path, mosquitto.port)
    pods = [FakePod(hostd.pods_dir / f"pod{i}.tty", pod_id=pod_id) for i, pod_id in enumerate(ids)]
    for pod in pods:
        pod.plug()
    hostd.start()
    try:
        for pod_id in ids:
            await wait_until(lambda pod_id=pod_id: watch.text(f"{P}/{pod_id}/availability") == "online",
                             timeout=10, what=f"{pod_id} online")
        await asyncio.sleep(2.0)  # links that took each other's id over would flap meanwhile
        for pod_id in ids:
            assert watch.history[f"{P}/{pod_id}/availability"] == [b"online"], pod_id
        connected = re.findall(r"New client connected from \S+ as (\S+) ", mosquitto.log_tail(20000))
        links = [c for c in connected if c.startswith("hypnolum-test-host-p")]
        assert len(links) == 2 and len(set(links)) == 2 and all(len(c) <= 64 for c in links), connected
        assert "already connected" not in mosquitto.log_tail(20000)
    finally:
        hostd.kill()
        for pod in pods:
            pod.unplug()


# -- exit status ---------------------------------------------------------------------------------
def _run_hostd(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hypnolum", "hostd", *args, str(config)],
                          capture_output=True, text=True, timeout=60)


def test_tls_files_that_do_not_load_end_hostd_with_status_2_and_the_reason(tmp_path):
    """hostd cannot reach its broker without its TLS credentials: a CA file that is not a
    certificate ends it at once, status 2, one line naming the key (also for --check-config,
    which the unit runs before starting hostd)."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    config = tmp_path / "hostd.toml"
    config.write_text(f'[host]\nid = "h"\n[mqtt]\ntls = true\nca_file = "{ca}"\n')
    for args in (("--config",), ("--check-config",)):
        out = _run_hostd(config, *args)
        assert out.returncode == 2, (args, out.returncode, out.stderr)
        assert out.stderr.startswith(f"{config}: mqtt.ca_file: the TLS files do not load: "), out.stderr
        assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr


def test_a_client_id_too_long_for_the_pod_links_is_a_configuration_error(tmp_path):
    config = tmp_path / "hostd.toml"
    config.write_text(f'[host]\nid = "{"h" * 41}"\n')  # hypnolum-<41> plus "-p-" and 12 hex digits: 65
    out = _run_hostd(config, "--check-config")
    assert out.returncode == 2 and "host.id: the MQTT client id 'hypnolum-hhh" in out.stderr, out.stderr
    config.write_text(f'[host]\nid = "{"h" * 40}"\n')
    assert _run_hostd(config, "--check-config").returncode == 0


@pytest.mark.broker
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_asked_for_is_status_0(tmp_path, mosquitto, watch, sig):
    hostd = Hostd(tmp_path, mosquitto.port, extra="stop_fade_ms = 0\n")
    hostd.start()
    try:
        await wait_until(lambda: watch.text("hypnolum/v1/hosts/test-host/availability") == "online", what="hostd")
        hostd.proc.send_signal(sig)
        assert await asyncio.to_thread(hostd.proc.wait, 15) == 0
        assert "stopped (exit status 0)" in hostd.log_text()
    finally:
        hostd.kill()


# -- the unit restarts hostd -----------------------------------------------------------------------
def _unit_settings() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            sections.setdefault(section, {}).setdefault(key, []).append(value)
    return sections


def test_the_unit_restarts_hostd_after_any_exit_it_did_not_ask_for(tmp_path):
    unit = _unit_settings()
    service = unit["Service"]
    # any exit but a stop systemd asked for (SIGTERM) is restarted: a failure (1, 2) and a clean-looking 0
    assert service["Restart"] == ["always"]
    assert "RestartPreventExitStatus" not in service and "SuccessExitStatus" not in service
    assert 1 <= int(service["RestartSec"][0].rstrip("s")) <= 10
    # a crash loop is given up on (the unit fails, for the operator to see), not hammered for ever
    interval, burst = int(unit["Unit"]["StartLimitIntervalSec"][0]), int(unit["Unit"]["StartLimitBurst"][0])
    assert burst >= 3 and interval >= burst * int(service["RestartSec"][0].rstrip("s"))
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.fail("systemd-analyze is missing: `make setup` installs the Debian package systemd")
    installed = tmp_path / UNIT.name
    installed.write_text(UNIT.read_text().replace("/opt/hypnolum/bin/hypnolum", str(Path(sys.executable).with_name("hypnolum"))))
    out = subprocess.run([analyze, "verify", str(installed)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and UNIT.name not in out.stderr, out.stderr
