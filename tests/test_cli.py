"""The ``hypnolum`` command line: ``--version``, a lazy ``--help``, and ``set``/``get`` over
MQTT against a real mosquitto, a real hostd and an emulated pod (the real firmware),
on an open loopback broker and on the shipped secure one (TLS, passwords, ACL)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from importlib.metadata import version

import pytest

from hypnolum import ctl, paths
from hypnolum.console import demo_link
from hypnolum.cli import COMMANDS
from hypnolum.emulator.runner import Emulator
from hypnolum.protocol.messages import EFFECT_PERIODS

from helpers.doc_lines import blocks, section, shell_line
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

P = "hypnolum/v1/pods"


async def cli(*args: str, timeout: float = 30, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``hypnolum ARGS`` as a user would (a subprocess: the emulated pods in this
    event loop keep running meanwhile)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "hypnolum", *map(str, args),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env={**os.environ, **(env or {})})
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode()


async def _sh(line: str, timeout: float = 20) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec("bash", "-c", line, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode()


def _localised(line: str, places: dict[str, str]) -> str:
    """A documented line with the example broker's address and files replaced by this test's."""
    for example, here in places.items():
        line = line.replace(example, here)
    assert "example" not in line and "/etc/" not in line and "~" not in line, line
    return line


def test_version_is_the_installed_distributions_and_help_imports_no_command():
    out = subprocess.run([sys.executable, "-m", "hypnolum", "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout == f"hypnolum {version('hypnolum')}\n", out
    probe = ("import sys; from hypnolum.cli import main; main(['--help']); "
             "print(sorted(m for m in sys.modules if m.startswith(('hypnolum.console', 'hypnolum.report', "
             "'hypnolum.ctl', 'hypnolum.monitor', 'hypnolum.host', 'aiomqtt', 'rich', 'aiohttp', 'matplotlib'))))")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    *usage, imported = shown.stdout.strip().splitlines()
    assert imported == "[]", f"--help imported {imported}"
    for name in ("set", "get", "monitor", "console", "report", "hostd", "demo"):
        assert any(line.split()[:1] == [name] for line in usage), (name, usage)
    assert COMMANDS["set"][0] == "hypnolum.ctl:set_main" and COMMANDS["get"][0] == "hypnolum.ctl:get_main"
    assert COMMANDS["monitor"][0] == "hypnolum.monitor:main"
    assert COMMANDS["console"][0] == "hypnolum.console.app:main" and COMMANDS["report"][0] == "hypnolum.report.cli:main"


@pytest.mark.parametrize("argv, says", [
    (["pod-01"], "say what to set"),
    (["pod-01", "--stop", "--effect", "off"], "--stop goes alone"),
    (["pod-01", "--json", '{"stop": true}', "--brightness", "0.2"], "--json goes alone"),
    (["pod-01", "--effect", "solid", "--color", "300,0,0"], "scene.color.0"),
    (["pod-01", "--effect", "disco"], "scene.effect"),
    (["pod-01", "--brightness", "1.5"], "scene.brightness"),
    (["pod-01", "--color", "#zzzzzz"], "not a colour"),
    (["pod-01", "--night", "schedule", "--night-start", "25:00"], "not a time of day"),
    (["pod-01", "--night-end", "07:00"], "--night schedule"),
    (["pod-01", "--json", "[1]"], "JSON object"),
    (["pod-01", "--json", "{nope"], "not JSON"),
    (["pod/01", "--effect", "off"], "POD"),
    (["pod-01", "--effect", "off", "--config", "/nonexistent/hostd.toml"], "/nonexistent/hostd.toml"),
    (["pod-01", "--effect", "off", "--host", "192.0.2.1"], "not on loopback"),
    (["pod-01", "--effect", "off", "--cert-file", "/etc/hostname"], "cert_file and key_file go together"),
])
def test_set_refuses_bad_arguments_naming_what_is_wrong(argv, says, capsys):
    assert ctl.set_main(argv) == 2
    err = capsys.readouterr().err
    assert says in err, err


@pytest.mark.parametrize("argv, says", [
    (["firmware"], "name the pods"),
    (["--pod", "pod/01", "firmware"], "--pod"),
    (["--pod", "pod-01", "/nonexistent"], "/nonexistent: No such file"),
    (["--pod", "pod-01", "/etc/hostname"], "not a bundle"),
    (["--pod", "pod-01", "--update-keys", "/nonexistent", "firmware"], "/nonexistent/pod-01.key: update key file not found"
                                                                        " (a pod whose firmware predates updates over the link "
                                                                        "has none yet: --new-key makes one)"),
    (["--pod", "pod-01", "--new-key", "--update-key", "/etc/hostname", "firmware"], "not with the fleet's --update-key"),
    (["--pod", "pod-01", "--confirm-s", "0", "firmware"], "--confirm-s"),
])
def test_update_refuses_bad_arguments_naming_what_is_wrong(argv, says, capsys):
    from hypnolum import update_tool

    argv = [str(paths.FIRMWARE) if a == "firmware" else a for a in argv]
    assert update_tool.main(["--app-format", "py", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err, err


def test_a_refusal_is_printed_with_its_field_and_allowed_range():
    line = ctl.describe_result("pod-01", {"id": "c", "ok": False, "nack": "bad_param", "field": "scene.params.1",
                                          "allowed": [-100, 100]}, 0.01)
    assert line == "pod-01: the pod refused it: bad_param (field scene.params.1, allowed -100..100)"
    line = ctl.describe_result("pod-01", {"id": "c", "ok": False, "busy": True, "error": "busy: 64 queued",
                                          "field": None}, 0.01)
    assert "busy" in line and "try again later" in line


def test_with_several_hosts_the_answer_of_the_host_holding_the_pod_wins():
    """Without an ACL every host answers; those without the pod say "not connected"."""
    import aiomqtt

    def msg(topic: str, payload: bytes) -> aiomqtt.Message:
        return aiomqtt.Message(topic, payload, qos=1, retain=False, mid=1, properties=None)

    reply, availability = f"{P}/pod-01/set/result", f"{P}/pod-01/availability"
    elsewhere = json.dumps({"id": "c1", "ok": False, "error": "pod pod-01 is not connected to host h2",
                            "field": "pod_id"}).encode()
    online = ctl._Waiter("c1", None, reply, availability)
    assert online.take(msg(availability, b"online")) is None
    assert online.take(msg(reply, elsewhere)) is None  # the pod is online: another host holds it
    assert online.take(msg(reply, json.dumps({"id": "other", "ok": True, "ack": "ok"}).encode())) is None
    assert online.take(msg(reply, b"{not json")) is None and online.ignored == 1
    assert online.take(msg(reply, json.dumps({"id": "c1", "ok": True, "ack": "ok"}).encode()))["ok"] is True
    nowhere = ctl._Waiter("c1", None, reply, availability)
    assert nowhere.take(msg(availability, b"offline")) is None
    assert nowhere.take(msg(reply, elsewhere))["field"] == "pod_id"  # not online anywhere: that is the answer


@pytest.mark.broker
@pytest.mark.micropython
async def test_set_and_get_through_hostd_to_an_emulated_pod(tmp_path, mosquitto):
    v311 = tmp_path / "v311.toml"
    v311.write_text(f'[mqtt]\nport = {mosquitto.port}\nprotocol = "3.1.1"\n')
    async with Emulator(1, tmp_path / "emu") as emu:
        hostd = Hostd(tmp_path, mosquitto.port, pods_dir=tmp_path / "emu")
        pod = emu["pod-01"]
        async with Watcher(mosquitto.port) as watch:
            hostd.start()
            try:
                await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=20, what="online")
                # readable flags, the broker from hostd's configuration; MQTT 5: the result on a reply topic
                rc, out, err = await cli("set", "pod-01", "--config", hostd.config, "--effect", "solid",
                                         "--color", "#ff0000", "--brightness", "1")
                assert rc == 0 and out.startswith("pod-01: done in "), (rc, out, err)
                await pod.leds.wait_for(lambda f: f.all((255, 0, 0)), timeout=5)
                replies = [m for m in watch.messages if m.topic.value.startswith("hypnolum/v1/replies/")]
                assert replies and json.loads(replies[-1].payload)["ok"] is True
                # a brightness alone dims the scene the pod shows and keeps it red
                rc, out, err = await cli("set", "pod-01", "--port", mosquitto.port, "--brightness", "0.3")
                assert rc == 0, (out, err)
                await pod.leds.wait_for(lambda f: len(set(f.pixels())) == 1 and 0 < f.pixels()[0][0] < 255
                                        and f.pixels()[0][1:] == (0, 0), timeout=5)
                # MQTT 3.1.1 (no response topic: set/result, matched by id); the result as JSON
                rc, out, err = await cli("set", "pod-01", "--config", v311, "--json", '{"scene": {"effect": "off"}}',
                                         "--output", "json")
                result = json.loads(out)
                assert rc == 0 and result["ok"] is True and result["id"].startswith("cli-"), (out, err)
                # refusals (run side by side): by hostd, naming the field and its range; by the pod
                # itself (strobe is not enabled on it); for a pod nobody holds; no state for a pod
                lo, hi, _default = EFFECT_PERIODS["heartbeat"]
                port = ("--port", mosquitto.port)
                (rc1, out1, _), (rc2, out2, _), (rc3, out3, _), (rc4, _, err4) = await asyncio.gather(
                    cli("set", "pod-01", *port, "--effect", "heartbeat", "--period-ms", hi + 1000),
                    cli("set", "pod-01", *port, "--effect", "strobe", "--strobe-opt-in"),
                    cli("set", "nobody", *port, "--effect", "off"),
                    cli("get", "pod-99", *port, "--wait", "0.5"))
                assert rc1 == 1 and "hostd refused it" in out1 and f"field scene.period_ms, allowed {lo}..{hi}" in out1
                assert rc2 == 1 and "the pod refused it" in out2, out2
                assert rc3 == 1 and "not connected" in out3 and "field pod_id" in out3, out3
                assert rc4 == 3 and "no state for pod pod-99" in err4, err4
                # the participant's stop goes through as every set does
                rc, out, err = await cli("set", "pod-01", "--port", mosquitto.port, "--stop")
                assert rc == 0, (out, err)
                # get: the retained state, readable and as JSON
                await wait_until(lambda: (watch.json(f"{P}/pod-01/state") or {}).get("eeg", {}).get("quality"),
                                 timeout=10, what="signal quality in the state")
                await wait_until(lambda: ((watch.json(f"{P}/pod-01/state") or {}).get("scene") or {}).get("stopped"),
                                 timeout=5, what="the pod reporting its stop")
                rc, out, err = await cli("get", "pod-01", "--port", mosquitto.port)
                lines = dict(line.split(None, 1) for line in out.splitlines() if line.strip())
                assert rc == 0 and lines["link"].startswith("online"), (out, err)
                assert lines["safety"].startswith("stopped"), out
                assert "8 ch @ 250 Hz" in lines["eeg"] and lines["quality"].startswith("1 ok"), out
                assert lines["clock"].startswith(("synced", "not synced")), out
                rc, out, err = await cli("get", "pod-01", "--port", mosquitto.port, "--output", "json")
                assert rc == 0 and json.loads(out)["pod_id"] == "pod-01", (out, err)
                # --demo: the broker of the demo running here, from the file the demo writes
                demo_file = tmp_path / "demo.json"
                demo_link.write("127.0.0.1", mosquitto.port, "test-host", ["pod-01"], str(tmp_path), path=demo_file)
                rc, out, err = await cli("get", "pod-01", "--demo", env={"HYPNOLUM_DEMO_FILE": str(demo_file)})
                assert rc == 0 and "pod-01" in out, (rc, out, err)
                demo_file.unlink()
                rc, out, err = await cli("get", "pod-01", "--demo", env={"HYPNOLUM_DEMO_FILE": str(demo_file)})
                assert rc == 2 and "no demo is running" in err, (rc, out, err)
            finally:
                hostd.kill()
        assert "Traceback" not in hostd.log_text(), hostd.log_text()
    # no hostd any more: no answer; no broker: exit 3 too
    rc, out, err = await cli("set", "pod-01", "--port", mosquitto.port, "--effect", "off", "--timeout", "1")
    assert rc == 3 and "no answer from hostd within 1 s" in err, (rc, out, err)
    mosquitto.stop()
    rc, out, err = await cli("get", "pod-01", "--port", mosquitto.port)
    assert rc == 3 and "cannot connect" in err, (rc, out, err)


@pytest.mark.broker
@pytest.mark.micropython
async def test_set_and_get_as_an_application_user_on_the_shipped_secure_broker(tmp_path):
    """Under the shipped ACL only the host holding the pod may write the replies of a user,
    and the client-id plugin grants a user only ids that start with its name."""
    from test_mqtt_secure import USERS, close_secure_broker, secure_broker

    broker = secure_broker()
    try:
        ca = broker.ca.ca_file
        pw = tmp_path / "controller.password"
        pw.write_text(USERS["controller"] + "\n")
        async with Emulator(1, tmp_path / "emu") as emu:
            hostd = Hostd(tmp_path, broker.port, pods_dir=tmp_path / "emu", host_id="hostd-1", mqtt_extra=(
                f'host = "localhost"\nusername = "hostd-1"\npassword = "{USERS["hostd-1"]}"\ntls = true\n'
                f'ca_file = "{ca}"\n'))
            async with Watcher(broker.port, ("hypnolum/v1/#",), username="controller", password=USERS["controller"],
                               tls_context=__import__("ssl").create_default_context(cafile=str(ca))) as watch:
                hostd.start()
                try:
                    await wait_until(lambda: watch.text(f"{P}/pod-01/availability") == "online", timeout=20,
                                     what="online")
                    # hostd's own configuration, logged in as the application user instead
                    as_controller = ("--config", hostd.config, "--username", "controller", "--password-file", pw)
                    rc, out, err = await cli("set", "pod-01", *as_controller, "--effect", "solid", "--color", "0,0,255")
                    assert rc == 0 and "done" in out, (rc, out, err)
                    await emu["pod-01"].leds.wait_for(lambda f: f.all((0, 0, 255)), timeout=5)
                    rc, out, err = await cli("get", "pod-01", *as_controller)
                    assert rc == 0 and "online" in out and "solid" in out, (rc, out, err)
                    # the documented secured-broker lines, with this broker's address and files
                    secured = blocks(section("Try it"), "sh")[1]
                    cert, key = broker.ca.issue("controller", "controller", server=False)
                    local = {"broker.example": "localhost", "8883": str(broker.port), "/etc/hypnolum/ca.pem": str(ca),
                             "~/.hypnolum-mqtt-password": str(pw), "controller.pem": str(cert),
                             "controller.key": str(key)}
                    rc, out = await _sh(_localised(shell_line(secured, "mosquitto_rr"), local))
                    assert rc == 0 and out.strip() == '{"id":"try-3","ok":true,"ack":"ok"}', out
                    rc, out = await _sh(_localised(shell_line(secured, "mosquitto_sub"), local) + " -C 1")
                    topic, payload = out.split(" ", 1)
                    assert rc == 0 and topic == f"{P}/pod-01/state" and json.loads(payload)["link"] == "online", out
                    # another host's user may not command this pod: the broker says so (MQTT 5 PUBACK)
                    rc, out, err = await cli("set", "pod-01", "--config", hostd.config, "--username", "hostd-2",
                                             "--password", USERS["hostd-2"], "--effect", "off", "--timeout", "3")
                    assert rc == 3 and "refused the command" in err, (rc, out, err)
                finally:
                    hostd.kill()
            assert "Traceback" not in hostd.log_text(), hostd.log_text()
    finally:
        close_secure_broker(broker)
