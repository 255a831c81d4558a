"""The session console without a browser: its configuration, its users file, and its
server against a real mosquitto, a real hostd and a fake pod on a pty, driven over
HTTP and the websocket as a page (or a hostile client) would."""
from __future__ import annotations

import asyncio
import json
import socket
import stat
import subprocess
import sys
import time
import aiohttp
import pytest

from hypnolum.broker import free_port
from hypnolum.console import auth
from hypnolum.console.config import load
from hypnolum.host.config import ConfigError
from hypnolum.host.timeline import Timeline

from helpers.console_proc import stop as stop_console
from helpers.fake_pod import FakePod
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

P = "hypnolum/v1/pods"


def _console(*args: str, stdin: str | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hypnolum", "console", *args], input=stdin, capture_output=True,
                          text=True, timeout=60, **kw)


# -- configuration --------------------------------------------------------------------------
def test_listening_beyond_loopback_needs_tls_and_login(tmp_path):
    conf = tmp_path / "hostd.toml"
    conf.write_text('[host]\nid = "h1"\n[serial]\nports = []\n[web]\nlisten = "0.0.0.0:8480"\n')
    with pytest.raises(ConfigError) as err:
        load(conf)
    assert "web: Value error, listen '0.0.0.0:8480' is beyond loopback: that needs TLS (tls_cert and tls_key) " \
           "and login (users_file)" in str(err.value)
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    conf.write_text(f'[web]\nlisten = "0.0.0.0:8480"\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    with pytest.raises(ConfigError, match=r"needs login \(users_file\)"):
        load(conf)
    conf.write_text(f'[web]\nlisten = "[::]:9000"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
                    f'users_file = "{tmp_path / "users"}"\n')
    cfg = load(conf)
    assert (cfg.web.host, cfg.web.port, cfg.web.tls) == ("::", 9000, True)
    # the default, and hostd's own tables are ignored
    conf.write_text('[host]\nid = "h1"\n[mqtt]\nport = 1884\n')
    cfg = load(conf)
    assert (cfg.web.listen, cfg.mqtt.port) == ("127.0.0.1:8480", 1884)
    with pytest.raises(ConfigError, match=r"web.listen: .*port must be 1..65535"):
        load(conf, listen="127.0.0.1:99999")
    # the command line says the same, with exit status 2
    conf.write_text('[web]\nlisten = "192.0.2.1:8480"\n')
    proc = _console("--check-config", str(conf))
    assert proc.returncode == 2 and "is beyond loopback" in proc.stderr, proc


def test_users_file_holds_salted_scrypt_hashes_and_bad_lines_cost_only_their_user(tmp_path):
    users = tmp_path / "etc" / "console.users"
    for name, role, password in (("ana", "operator", "correct horse"), ("vic", "viewer", "battery staple")):
        proc = _console("--add-user", name, "--role", role, "--users-file", str(users), stdin=password + "\n")
        assert proc.returncode == 0 and f"added {role} {name}" in proc.stdout, proc
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    text = users.read_text()
    assert "correct horse" not in text and text.count("scrypt$16384$8$1$") == 2
    proc = _console("--add-user", "bob", "--users-file", str(users), stdin="short\n")
    assert proc.returncode == 2 and "8..1024 characters" in proc.stderr
    users.write_text(text + "broken line\nmallory:admin:scrypt$1$1$1$x$y\n")
    table = auth.Users(users)
    assert table.verify("ana", "correct horse").role == "operator"
    assert table.verify("vic", "battery staple").role == "viewer"
    assert table.verify("ana", "battery staple") is None and table.verify("nobody", "correct horse") is None
    assert table.problems == [f"{users}:line 3: expected name:role:hash",
                              f"{users}:line 4: role 'admin' is not one of operator, viewer"]
    # the same password twice gives two hashes (salted)
    assert auth.hash_password("same") != auth.hash_password("same")


# -- the server ---------------------------------------------------------------------------------
@pytest.fixture
async def stack(tmp_path, mosquitto):
    """hostd with one fake pod, and a console with a users file (ana: operator, vic: viewer)."""
    users = tmp_path / "console.users"
    for name, role, password in (("ana", "operator", "correct horse"), ("vic", "viewer", "battery staple")):
        auth.add_user(users, name, role, password)
    hostd = Hostd(tmp_path, mosquitto.port, extra=f'[recorder]\nenabled = true\ndir = "{tmp_path / "rec"}"\n')
    port = free_port()
    conf = tmp_path / "console.toml"
    conf.write_text(f'[mqtt]\nport = {mosquitto.port}\n[web]\nlisten = "127.0.0.1:{port}"\nusers_file = "{users}"\n')
    pod = FakePod(hostd.pods_dir / "a.tty", pod_id="pod-a")
    log = open(tmp_path / "console.log", "w")
    console = subprocess.Popen([sys.executable, "-m", "hypnolum", "console", "--config", str(conf)],
                               stdout=log, stderr=subprocess.STDOUT)
    hostd.start()
    pod.plug()
    try:
        async with Watcher(mosquitto.port) as watch:
            await wait_until(lambda: watch.text(f"{P}/pod-a/availability") == "online", timeout=15, what="pod-a online")
            await wait_until(lambda: listening(port) or console.poll() is not None, timeout=15, what="console listening")
            yield f"http://127.0.0.1:{port}", watch, console, pod
    finally:
        pod.close()
        hostd.kill()
        stop_console(console, log)
    assert console.returncode == 0, (tmp_path / "console.log").read_text()
    assert "Traceback" not in (tmp_path / "console.log").read_text()


def _client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies of 127.0.0.1 too


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


async def _login(http: aiohttp.ClientSession, base: str, user: str, password: str) -> int:
    async with http.post(f"{base}/login", data={"user": user, "password": password}, allow_redirects=False) as r:
        return r.status


async def _until(ws: aiohttp.ClientWebSocketResponse, pred, timeout: float = 10.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            if pred(data):
                return data


async def test_roles_are_enforced_by_the_server_and_hostile_messages_get_clear_errors(stack):
    """Logins, roles, hostile page messages, and a command and a marker that reach hostd."""
    base, watch, console, pod = stack
    async with _client() as anon:
        async with anon.get(f"{base}/", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/login"
        async with anon.get(f"{base}/api/status") as r:
            assert r.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await anon.ws_connect(f"{base}/ws")
        assert err.value.status == 401
        assert await _login(anon, base, "ana", "wrong password") == 401

    # a viewer sees everything, and may watch a pod's EEG, but the server refuses its commands
    async with _client() as viewer:
        assert await _login(viewer, base, "vic", "battery staple") == 302
        async with viewer.ws_connect(f"{base}/ws") as ws:
            hello = await _until(ws, lambda m: m["t"] == "hello")
            assert hello["role"] == "viewer" and "heartbeat" in hello["effects"] and "moon" in hello["palettes"]
            await _until(ws, lambda m: m["t"] == "pod" and m["id"] == "pod-a" and m["link"] == "online")
            for op, extra in (("set", {"scene": {"effect": "solid"}}), ("stop", {}), ("marker", {"text": "x"})):
                await ws.send_json({"op": op, "req": op, "pod": "pod-a", **extra})
                err = await _until(ws, lambda m: m["t"] == "error")
                assert err["req"] == op and f"{op}: viewers cannot send commands" in err["error"], err
            await ws.send_json({"op": "watch", "pod": "pod-a"})
            await _until(ws, lambda m: m["t"] == "watching" and m["id"] == "pod-a")
            eeg = await _until(ws, lambda m: m["t"] == "eeg")
            assert eeg["id"] == "pod-a" and len(eeg["uv"]) == 8
        # a websocket opened from another site is refused, even with the viewer's cookie
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await viewer.ws_connect(f"{base}/ws", origin="http://evil.example")
        assert err.value.status == 403
    assert not [t for t in watch.history if t.endswith("/set") or t.endswith("/marker")]

    async with _client() as operator:
        assert await _login(operator, base, "ana", "correct horse") == 302
        async with operator.ws_connect(f"{base}/ws") as ws:
            assert (await _until(ws, lambda m: m["t"] == "hello"))["role"] == "operator"
            hostile = [
                ("x" * 20000, "message of 20000 bytes, more than the limit of 16384"),
                ("{not json", "invalid JSON"),
                ("[1, 2]", "a message must be a JSON object, not list"),
                ('{"op": "format_disk"}', "op must be one of watch, set, stop, marker, timeline"),
                ('{"op": "set", "pod": 42, "scene": {}}', "pod must be a pod id, not 42"),
                ('{"op": "set", "pod": "pod-zz", "scene": {"effect": "solid"}}', "unknown pod 'pod-zz'"),
                ('{"op": "set", "pod": "pod-a", "scene": {"effect": "solid", "color": [0, 300, 0]}}',
                 "scene.color.1: Input should be less than or equal to 255"),
                ('{"op": "set", "pod": "pod-a", "scene": "solid"}', "scene must be an object"),
                ('{"op": "marker", "pod": "pod-a", "text": ""}', "text: 1..500 characters are required"),
                ('{"op": "set", "circle": "nowhere", "scene": {"effect": "solid"}}', 'unknown circle "nowhere"'),
                ("[" * 40 + "]" * 40, "JSON nested deeper than 8 levels"),
            ]
            for text, expected in hostile:
                await ws.send_str(text)
                err = await _until(ws, lambda m: m["t"] == "error")
                assert expected in err["error"], (text[:40], err)
            await ws.send_bytes(b"\x00\x01")
            assert "binary messages are not accepted" in (await _until(ws, lambda m: m["t"] == "error"))["error"]
            # nothing of that reached the broker; a good command does, and its result comes back
            assert not [t for t in watch.history if t.endswith("/set") or t.endswith("/marker")]
            await ws.send_json({"op": "set", "req": 1, "pod": "pod-a",
                                "scene": {"effect": "solid", "color": [0, 40, 255], "brightness": 0.5}})
            result = await _until(ws, lambda m: m["t"] == "result" and m["req"] == 1)
            assert result["ok"] and result["by"] == "ana" and result["what"] == "scene solid", result
            sent = json.loads(watch.history[f"{P}/pod-a/set"][-1])
            assert sent["scene"]["color"] == [0, 40, 255] and sent["id"].startswith("console-")
            await ws.send_json({"op": "marker", "req": 2, "pod": "pod-a", "text": "eyes closed"})
            result = await _until(ws, lambda m: m["t"] == "result" and m["req"] == 2)
            assert result["ok"], result
            # a circle: a scene for each of its pods, and a timeline started and stopped
            await watch.client.publish("hypnolum/v1/circles/c1/definition", json.dumps({"pods": ["pod-a"]}),
                                       qos=1, retain=True)
            await _until(ws, lambda m: m["t"] == "circle" and m["name"] == "c1" and m["pods"] == ["pod-a"])
            await ws.send_json({"op": "set", "req": 3, "circle": "c1", "scene": {"effect": "breathe"}})
            result = await _until(ws, lambda m: m["t"] == "result" and m["req"] == 3)
            assert result["ok"] and result["target"] == "pod-a", result
            before = time.time_ns()
            await ws.send_json({"op": "timeline", "req": 4, "circle": "c1", "action": "start",
                                "scene": {"effect": "aurora", "palette": "ocean", "brightness": 0.4}})
            result = await _until(ws, lambda m: m["t"] == "result" and m["req"] == 4)
            assert result["ok"] and result["text"] == "published: starts in 500 ms on 1 pods", result
            after = time.time_ns()
            timeline = Timeline.parse(await wait_until(lambda: watch.latest.get("hypnolum/v1/circles/c1/timeline"),
                                                       what="the retained timeline"))
            assert timeline.events[0].scene.palette == "ocean"
            assert before + 500_000_000 <= timeline.events[0].at_ns <= after + 500_000_000
            await _until(ws, lambda m: m["t"] == "circle" and m["name"] == "c1" and m["timeline"] == {"events": 1})
            await ws.send_json({"op": "timeline", "req": 5, "circle": "c1", "action": "stop"})
            assert (await _until(ws, lambda m: m["t"] == "result" and m["req"] == 5))["ok"]
            await _until(ws, lambda m: m["t"] == "circle" and m["name"] == "c1" and m["timeline"] is None)
            await wait_until(lambda: watch.latest["hypnolum/v1/circles/c1/timeline"] == b"", what="timeline cleared")
        # a frame over the websocket limit closes that socket only (1009); the console goes on
        async with operator.ws_connect(f"{base}/ws") as ws:
            await ws.send_str("x" * (1024 * 1024 + 10))
            msg = await ws.receive(timeout=10)
            while msg.type == aiohttp.WSMsgType.TEXT:
                msg = await ws.receive(timeout=10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            assert ws.close_code == 1009
        # garbage on the broker is skipped, counted and named; the console goes on
        await watch.publish(f"{P}/pod-a/leds", {"segments": 2, "rgb": "zz"})
        await watch.client.publish(f"{P}/pod-b/state", b"{not json", qos=1)
        await watch.client.publish("hypnolum/v1/circles/c1/group/h9", b"[1, 2]", qos=1)

        async def status_now() -> dict:
            async with operator.get(f"{base}/api/status") as r:
                return await r.json()

        status = await status_now()
        deadline = time.monotonic() + 10
        while sum(status["mqtt"]["skipped"].values()) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            status = await status_now()
    assert status["mqtt"]["skipped"] == {"value": 2, "json": 1}, status["mqtt"]
    assert status["mqtt"]["last_skipped"] == "hypnolum/v1/circles/c1/group/h9: group/h9 is not a JSON object"
    assert status["broker"]["connected"] and status["pods"] == 1
    refused = status["page_messages"]["refused"]
    assert refused["role"] == 3 and refused["size"] == 1 and refused["json"] == 1 and refused["unknown"] == 2 \
        and refused["binary"] == 1 and refused["depth"] == 1, refused
    assert console.poll() is None
    # failed logins: five a minute from one address, then even the right password waits
    async with _client() as http:
        codes = [await _login(http, base, "ana", f"guess {i}") for i in range(4)]  # the fifth failure of this test
        assert codes == [401] * 4
        assert await _login(http, base, "ana", "correct horse") == 429
        async with http.post(f"{base}/login", data={"user": "ana", "password": "x"},
                             headers={"Origin": "http://evil.example"}) as r:
            assert r.status == 403

