"""The one pod id grammar: in protocol/ids.py, provisioning, the pod's pod.json, topics, circles and HELLO."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess

import pytest

from hypnolum import paths
from hypnolum.emulator.pod import find_micropython
from hypnolum.flash import provision
from hypnolum.flash.errors import BadConfig
from hypnolum.host import topics
from hypnolum.host.circles import CircleDef
from hypnolum.host.config import PodsConfig
from hypnolum.host.session import LocalClaims, PodSession
from hypnolum.host.transport.serial import SerialTransport
from hypnolum.protocol.ids import PathEscape, check_inside, is_pod_id, pod_id_problem
from hypnolum.protocol.pod_config import problem

from helpers.fake_pod import FakePod
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

GOOD = ["pod-a", "P017", "a", "0", "pod_07-B", "pod-246f28aabbcc", "a" * 64]
BAD = ["", "../../../tmp/x", "a/+/#", "+", "#", "a/b", "P017\n", "pod a", "-pod", "_pod", ".hidden", "a" * 65,
       "pöd", "pod\x00", "pod.a", "\u0661"]  # ARABIC-INDIC DIGIT ONE: a digit, not an ASCII one
HOSTILE = ["", "a/+/#", "../../x"]  # announced by pods in HELLO below
FAST = PodsConfig(heartbeat_timeout_s=0.6, ping_interval_s=0.1, connect_interval_s=0.1,
                  command_timeout_s=0.15, command_retries=2)


def test_grammar():
    assert all(is_pod_id(i) for i in GOOD)
    assert not any(is_pod_id(i) for i in BAD)
    assert not is_pod_id(None) and not is_pod_id(7)
    assert pod_id_problem("") == "pod id is empty"
    assert "65 characters" in pod_id_problem("a" * 65)
    assert "'a/+/#' does not match" in pod_id_problem("a/+/#")


def test_provisioning_takes_the_grammar():
    for pod_id in GOOD:
        assert provision.make({"pod_id": pod_id}).pod_id == pod_id
    for pod_id in BAD:
        with pytest.raises(BadConfig, match="pod_id"):
            provision.make({"pod_id": pod_id})


def test_the_pod_refuses_a_pod_id_outside_the_grammar(tmp_path):
    """firmware/pod/config.py under the real interpreter: a bad pod_id falls back to the id from the unique id."""
    code = ("import json\nfrom pod import config\n"
            "for i in json.loads(open('ids.json').read()):\n"
            "    c = config.parse(json.dumps({'pod_id': i}), b'\\x24\\x6f\\x28\\xaa\\xbb\\xcc')\n"
            "    print(json.dumps([c.pod_id, c.errors]))\n")
    (tmp_path / "ids.json").write_text(json.dumps(GOOD + BAD))
    env = dict(os.environ, MICROPYPATH=f"{paths.EMULATOR_SHIMS}:{paths.FIRMWARE}:.frozen", HYPNOLUM_POD_DIR=str(tmp_path))
    out = subprocess.run([find_micropython(), "-c", code], env=env, cwd=tmp_path, capture_output=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr.decode()
    got = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert got == [[i, []] for i in GOOD] + [["pod-246f28aabbcc", [problem("pod_id", i)]] for i in BAD]
    assert all(problem("pod_id", i).startswith("pod_id: ") for i in BAD)


def test_topics_refuse_ids_that_are_not_one_level():
    assert topics.pod("pod-a", "state") == "hypnolum/v1/pods/pod-a/state"
    for bad in ("", "a/b", "+", "#", "a/+/#", "x\x00"):
        with pytest.raises(topics.TopicError, match="not one MQTT topic level"):
            topics.pod(bad, "state")
    with pytest.raises(topics.TopicError):
        topics.host("h/+", "state")


def test_circle_definitions_take_only_pod_ids():
    assert CircleDef.model_validate({"pods": ["pod-a", "pod-b"]}).pods == ["pod-a", "pod-b"]
    for bad in ("#", "+", "a/b", "", "../x"):
        with pytest.raises(ValueError, match="pods.0"):
            CircleDef.model_validate({"pods": [bad]})


def test_check_inside(tmp_path):
    d = tmp_path / "rec"
    d.mkdir()
    assert check_inside(d, "pod-a_20260101T000000Z.bdf") == d.resolve() / "pod-a_20260101T000000Z.bdf"
    assert check_inside(d, d / "sub" / "f") == d.resolve() / "sub" / "f"
    for escape in ("../x.bdf", "../../../tmp/x_1.bdf", "/etc/passwd", "a/../../x", ".", ""):
        with pytest.raises(PathEscape, match="outside"):
            check_inside(d, escape)
    (d / "link").symlink_to(tmp_path)
    with pytest.raises(PathEscape):
        check_inside(d, "link/x.bdf")  # resolved: symlinks are followed


@pytest.mark.parametrize("pod_id", HOSTILE)
async def test_hello_with_a_bad_pod_id_is_refused(tmp_path, caplog, pod_id):
    pod = FakePod(tmp_path / "pod.tty", pod_id=pod_id)
    pod.plug()
    transport = SerialTransport(str(pod.link))
    await transport.open()
    claims = LocalClaims()
    session = PodSession(transport, FAST, "h", claims)
    task = asyncio.create_task(session.run())
    try:
        with caplog.at_level(logging.WARNING):
            await wait_until(lambda: session.state.link == "refused", what="refused")
            await asyncio.sleep(0.3)  # more HELLOs: still refused, quietly
        assert repr(pod_id) in session.state.reason or pod_id == ""
        assert "pod id" in session.state.reason
        assert session.claimed is None and claims.holders == {}
        assert not task.done(), "the session goes on (the pod may be reflashed)"
        assert not any(r.exc_info for r in caplog.records)
        assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await transport.close()
        pod.unplug()


@pytest.mark.broker
async def test_hostd_refuses_hostile_pod_ids(tmp_path, mosquitto):
    """Pods announcing "", "a/+/#" and "../../x" next to a good one: refused, nothing published or
    written under their ids, and the good pod goes online."""
    rec = tmp_path / "a" / "b" / "rec"
    hostd = Hostd(tmp_path, mosquitto.port, extra=f'[recorder]\nenabled = true\ndir = "{rec}"\n'
                                                  "[eeg]\npublish_interval_s = 0.1\n")
    async with Watcher(mosquitto.port, filters=("hypnolum/v1/#", "homeassistant/#")) as watch:
        hostd.start()
        pods = [FakePod(hostd.pods_dir / f"bad{i}.tty", pod_id=p) for i, p in enumerate(HOSTILE)]
        pods.append(FakePod(hostd.pods_dir / "good.tty", pod_id="pod-ok"))
        try:
            for pod in pods:
                pod.plug()
            await wait_until(lambda: watch.text("hypnolum/v1/pods/pod-ok/availability") == "online", timeout=10,
                             what="the good pod online")
            await wait_until(lambda: len(watch.history["hypnolum/v1/pods/pod-ok/eeg"]) >= 3, what="eeg")
            await wait_until(lambda: hostd.log_text().count("refused: pod id") >= len(HOSTILE), what="refusals")
            assert hostd.proc.poll() is None
            pod_topics = {t.split("/")[3] for t in watch.latest if t.startswith("hypnolum/v1/pods/")}
            assert pod_topics == {"pod-ok"}, pod_topics
            assert not [t for t in watch.latest if "/pods//" in t or "pods/a/" in t or ".." in t]
            assert all("pod-ok" in t for t in watch.latest if t.startswith("homeassistant/"))
            host_state = watch.json("hypnolum/v1/hosts/test-host/state")
            assert host_state is None or host_state["pods"] == ["pod-ok"]
            written = [p for p in tmp_path.rglob("*") if p.is_file() and (".bdf" in p.name or "resume" in p.name)]
            assert written and all(p.parent == rec for p in written), written
            assert "Traceback" not in hostd.log_text()
        finally:
            for pod in pods:
                pod.unplug()
            hostd.stop()
