"""`make console` after `make demo`: ``hypnolum console --demo`` finds the running demo's
private broker through the file the demo writes, follows it from one demo to none, and
without a users file lets visitors see and the printed operator link steer."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import aiohttp
import pytest

from hypnolum.broker import free_port


pytestmark = [pytest.mark.broker, pytest.mark.micropython]


async def _status(http: aiohttp.ClientSession, base: str) -> dict:
    try:
        async with http.get(f"{base}/api/status") as r:
            return await r.json() if r.status == 200 else {}
    except aiohttp.ClientError:
        return {}


async def test_console_follows_the_running_demo(tmp_path):
    env = dict(os.environ, HYPNOLUM_DEMO_FILE=str(tmp_path / "demo.json"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out = open(tmp_path / "console.out", "w+")
    console = subprocess.Popen([sys.executable, "-m", "hypnolum", "console", "--demo", "--listen", f"127.0.0.1:{port}"],
                               env=env, stdout=out, stderr=subprocess.STDOUT)
    demo = None
    state: dict = {}
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async def seen(pred) -> bool:
                state.update(await _status(http, base))
                return bool(state) and pred(state)

            async def until(pred, what: str, timeout: float = 30.0) -> None:
                deadline = time.monotonic() + timeout
                while not await seen(pred):
                    assert time.monotonic() < deadline, f"timed out waiting for {what}: {state}"
                    await asyncio.sleep(0.2)

            await until(lambda s: "no demo is running" in s["broker"]["problem"], "the console to wait for a demo")
            demo = subprocess.Popen([sys.executable, "-m", "hypnolum", "demo", "--forever", "--pods", "1"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await until(lambda s: s["broker"]["connected"] and s["pods"] == 1, "the demo's pod on the console")
            link = json.loads((tmp_path / "demo.json").read_text())
            assert link["pid"] == demo.pid and state["broker"]["where"] == f"127.0.0.1:{link['port']}"
            # without a users file: a visitor is a viewer; the printed link makes an operator
            token = re.search(r"login\?token=(\S+)", (tmp_path / "console.out").read_text()).group(1)
            async with http.get(f"{base}/login?token=wrong", allow_redirects=False) as r:
                assert r.status == 403
            async with http.ws_connect(f"{base}/ws") as ws:
                assert (await ws.receive_json(timeout=10))["role"] == "viewer"
            async with http.get(f"{base}/login?token={token}", allow_redirects=False) as r:
                assert r.status == 302
            async with http.ws_connect(f"{base}/ws") as ws:
                assert (await ws.receive_json(timeout=10))["role"] == "operator"
                async with asyncio.timeout(30):
                    while not ((m := await ws.receive_json()).get("t") == "pod" and m["link"] == "online"):
                        pass
                assert m["id"] == "pod-01" and m["transport"] == "serial"
            demo.send_signal(signal.SIGTERM)
            assert demo.wait(30) == 0
            assert not (tmp_path / "demo.json").exists()
            await until(lambda s: not s["broker"]["connected"] and "no demo is running" in s["broker"]["problem"],
                        "the console to see the demo gone")
    finally:
        for proc in (demo, console):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        out.close()
    assert console.returncode == 0, (tmp_path / "console.out").read_text()
