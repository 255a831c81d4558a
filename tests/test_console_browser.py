"""The session console in a real browser (Debian's chromium, headless, through Selenium)
against a stack like `make demo`'s: a private mosquitto, two emulated pods running the
real firmware, hostd recording their EEG, and the console. An operator logs in, sees the
pods come online, sends a scene and sees the strip take its colour, presses a pod's stop
button; the pod's own LED frames reach the safe glow within 2 s and stay there, and the
``stop`` marker is in its recording. The page, as it then looks, is docs/console.png."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyedflib
import pytest

from hypnolum import paths
from hypnolum.broker import free_port
from hypnolum.console import auth
from hypnolum.emulator.runner import Emulator

from helpers.console_proc import stop as stop_console
from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.micropython, pytest.mark.timeout(90)]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = paths.ROOT / "docs" / "console.png"
# the safe glow (docs/light.md): SAFE_COLOR (255, 120, 36) at brightness 28 of 255, one unit of rounding
SAFE_MAX = (29, 14, 5)
STOP_WITHIN_S = 2.0
P = "hypnolum/v1/pods"


def _driver():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are not installed: run `make setup`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1250", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Page:
    """The browser, driven from a thread: the emulated pods live in this event loop."""

    def __init__(self, driver) -> None:
        self.d = driver

    async def run(self, fn, *args):
        return await asyncio.to_thread(fn, *args)

    async def js(self, script: str, *args):
        return await self.run(self.d.execute_script, script, *args)

    async def wait_js(self, script: str, what: str, timeout: float = 15.0, *args):
        """Until ``script`` returns something true; that value."""
        return await wait_until_async(lambda: self.js(script, *args), timeout, what)

    async def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        element = await self.run(self.d.find_element, By.CSS_SELECTOR, css)
        await self.run(element.click)


async def wait_until_async(probe, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _full_page_screenshot(driver, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1400, "height": min(int(height), 3000), "deviceScaleFactor": 1, "mobile": False})
    driver.save_screenshot(str(path))


def _glow(frame) -> bool:
    return all(max(frame.rgb[i + k] for i in range(0, len(frame.rgb), 3)) <= SAFE_MAX[k] for k in range(3))


def _lit_at(frame) -> float:
    return frame.shown_us / 1e6 if frame.shown_us else frame.host_time


def _annotations(rec_dir: Path, pod_id: str) -> list[str]:
    found = []
    for path in rec_dir.glob(f"{pod_id}_*.bdf"):
        try:
            with pyedflib.EdfReader(str(path)) as f:
                found += list(f.readAnnotations()[2])
        except OSError:  # a record being written: read again
            pass
    return found


async def test_operator_sends_a_scene_and_stops_a_pod_in_the_browser(tmp_path, mosquitto):
    users = tmp_path / "console.users"
    auth.add_user(users, "ana", "operator", "correct horse")
    rec = tmp_path / "rec"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "console.log", "w")
    async with Emulator(2, tmp_path / "emu") as emu, Watcher(mosquitto.port) as watch:
        # one file for both, as on an installation: hostd leaves [web] to the console
        hostd = Hostd(tmp_path, mosquitto.port, pods_dir=tmp_path / "emu",
                      extra=f'[recorder]\nenabled = true\ndir = "{rec}"\n'
                            f'[web]\nlisten = "127.0.0.1:{port}"\nusers_file = "{users}"\n')
        hostd.start()
        console = subprocess.Popen([sys.executable, "-m", "hypnolum", "console", "--config", str(hostd.config)],
                                   stdout=log, stderr=subprocess.STDOUT)
        # a circle of both pods: the page shows its sync error and group value
        await watch.client.publish("hypnolum/v1/circles/room-1/definition",
                                   json.dumps({"pods": ["pod-01", "pod-02"], "group_id": 1}), qos=1, retain=True)
        driver = await asyncio.to_thread(_driver)
        page = Page(driver)
        try:
            await wait_until(lambda: _listening(port) or console.poll() is not None, timeout=15, what="console")
            # log in as the operator through the form
            await page.run(driver.get, base + "/")
            await page.wait_js("return location.pathname === '/login' && document.querySelector('#login')",
                               "the login form")
            await page.js("document.querySelector('input[name=user]').value = 'ana';"
                          "document.querySelector('input[name=password]').value = 'correct horse';")
            await page.click("#login")
            await page.wait_js("return document.body.classList.contains('operator')", "the operator's page")
            # both pods come online on the page
            for pod_id in ("pod-01", "pod-02"):
                await page.wait_js(f"const c = document.getElementById('pod-{pod_id}');"
                                   "return c && c.dataset.link === 'online'", f"{pod_id} online", 30)
            await page.js("const s = document.querySelector('#eeg-pod'); s.value = 'pod-01';"
                          "s.dispatchEvent(new Event('change'))")
            # a scene for pod-02 (for the picture), then a blue one for pod-01
            for pod_id, effect, palette, color, brightness in (("pod-02", "aurora", "ocean", "#40ffa0", 70),
                                                               ("pod-01", "solid", "warm", "#0040ff", 80)):
                await page.js("const f = (id, v) => { const e = document.getElementById(id); e.value = v;"
                              " e.dispatchEvent(new Event('change')); e.dispatchEvent(new Event('input')); };"
                              f"f('target', 'pod:{pod_id}'); f('effect', '{effect}'); f('palette', '{palette}');"
                              f"f('color', '{color}'); f('brightness', '{brightness}'); f('transition', '0');")
                await page.click("#send-scene")
                await page.wait_js(f"return [...document.querySelectorAll('#results li.mine')].some(li => "
                                   f"li.dataset.ok === '1' && li.textContent.includes('{pod_id} scene {effect}'))",
                                   f"{pod_id}'s scene acknowledged")
            await emu["pod-01"].leds.wait_for(lambda f: f.pixel(0)[2] > 150 and f.pixel(0)[0] < 30, timeout=5)
            # the strip on the page takes the colour, from hostd's leds topic
            await page.wait_js("const s = document.querySelector('#pod-pod-01 .strip').dataset.rgb || '';"
                               "return s.length >= 6 && parseInt(s.substr(4, 2), 16) > 150 && "
                               "parseInt(s.substr(0, 2), 16) < 30", "pod-01's strip blue on the page")
            # one click on stop: no dialog
            clicked = time.monotonic()
            await page.click("#pod-pod-01 button.stop")
            await page.wait_js("return [...document.querySelectorAll('#results li.mine')].some(li => "
                               "li.dataset.ok === '1' && li.textContent.includes('pod-01 stop'))", "stop acknowledged")
            await asyncio.sleep(max(0.0, clicked + STOP_WITHIN_S + 0.7 - time.monotonic()))
            frames = [f for f in emu["pod-01"].leds.history if _lit_at(f) >= clicked]
            late = [f for f in frames if _lit_at(f) >= clicked + STOP_WITHIN_S]
            assert late and all(_glow(f) for f in late), \
                f"pod-01 not at the safe glow {STOP_WITHIN_S} s after stop: {late[-1].pixel(0) if late else 'no frames'}"
            reached = min(_lit_at(f) for f in frames if all(_glow(g) for g in frames if _lit_at(g) >= _lit_at(f)))
            print(f"pod-01 at the safe glow {frames[-1].pixel(0)} {reached - clicked:.2f} s after the click on stop "
                  f"(from {frames[0].pixel(0)})")
            assert not _glow(frames[0]) and frames[-1].pixel(0)[0] > 0  # it faded from the scene to a glow, not dark
            assert emu["pod-02"].leds.last.pixel(0) != frames[-1].pixel(0)  # the other pod did not stop
            # the strip on the page follows, and the result says who stopped it
            await page.wait_js("const s = document.querySelector('#pod-pod-01 .strip').dataset.rgb || '';"
                               "return s.length >= 6 && parseInt(s.substr(0, 2), 16) <= 40 && "
                               "parseInt(s.substr(4, 2), 16) <= 10", "pod-01's strip at the glow on the page")
            await page.wait_js("return document.querySelector('#pod-pod-01 .safety').textContent"
                               ".includes('stopped: safe glow held')", "pod-01 shown as stopped")
            # the stop marker reaches the recording (records are written once a second)
            await wait_until(lambda: any("stop" in a for a in _annotations(rec, "pod-01")), timeout=10,
                             what="the stop marker in pod-01's recording")
            await page.wait_js("return document.querySelector('#circle-room-1 .facts') && "
                               "document.querySelector('#circle-room-1 .facts').textContent.includes('sync error ≤')",
                               "the circle's sync error")
            await page.run(_full_page_screenshot, driver, tmp_path / "console.png")
            errors = await page.js("return document.querySelector('#page-errors').textContent")
            assert not errors, errors
        except BaseException:
            print(f"--- hostd log ---\n{hostd.log_text()[-3000:]}\n--- console log ---\n"
                  f"{(tmp_path / 'console.log').read_text()[-3000:]}\n--- page ---\n{driver.page_source[:4000]}")
            raise
        finally:
            await asyncio.to_thread(driver.quit)
            hostd.kill()
            stop_console(console, log)
    assert console.returncode == 0 and "Traceback" not in (tmp_path / "console.log").read_text()
    if os.environ.get("HYPNOLUM_UPDATE_PICTURES"):  # `make pictures`: the docs' copy is refreshed on request only
        shutil.copyfile(tmp_path / "console.png", SCREENSHOT)
