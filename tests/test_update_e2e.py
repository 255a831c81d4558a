"""An update over the link, end to end: `hypnolum update` -> MQTT -> hostd -> an emulated board.

The board's filesystem is what the flash tool leaves (emulator/flashed.py: its
bundle in slot a/, slots.json, update.key); the real firmware boots from it on
the 32-bit MicroPython at the pod's heap budget. The new build is the same
firmware with one constant changed, compiled as the flash tool compiles it.
The cable is pulled half way through the transfer: hostd resumes where the pod
is. EEG keeps flowing with no sample lost until the pod resets into the new
build, which hostd confirms once its HELLO names it. A bundle tagged with
another key is then refused, and nothing on the pod changes.
"""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys

import pytest
from jsonschema import Draft202012Validator

from hypnolum import paths
from hypnolum.emulator.flashed import flashed_pod
from hypnolum.flash import bundle, updatekey
from hypnolum.host import update_parts as up

from helpers.hostd import Hostd
from helpers.mqtt_watch import Watcher
from helpers.wait import wait_until

pytestmark = pytest.mark.micropython

P = "hypnolum/v1/pods"
KEY = bytes(range(32))


def _new_firmware(tmp_path):
    fw = tmp_path / "firmware-new"
    shutil.copytree(paths.FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
    status = fw / "pod" / "status.py"
    status.write_text(status.read_text() + "\n_NEXT_BUILD = 1  # the build after the flashed one\n")
    # and a module nothing imports, so the transfer lasts long enough to pull the cable in it
    (fw / "pod" / "filler.py").write_text('"""Bytes to send."""\nDATA = "' + "x" * 600_000 + '"\n')
    return fw


def _schema_errors(state):
    schema = json.loads((paths.ROOT / "docs" / "schemas" / "pod-state.json").read_text())
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in Draft202012Validator(schema).iter_errors(state)]


def _flash(fs):
    """What an update may change on the board: the slots, slots.json, the update's files."""
    files = [p for p in fs.rglob("*") if p.is_file() and (p.relative_to(fs).parts[0] in ("a", "b")
                                                          or p.name in ("slots.json", "update.man", "update.key"))]
    return {str(p.relative_to(fs)): p.read_bytes() for p in sorted(files)}


async def _update(hostd, *args):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hypnolum", "update", "--config", str(hostd.config), "--app-format", "x86", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    return proc


async def test_update_over_mqtt_resumes_after_a_cable_pull_confirms_and_refuses_a_wrong_key(mosquitto, tmp_path):
    old = bundle.build(paths.FIRMWARE, "x86")
    new_fw = _new_firmware(tmp_path)
    new = bundle.build(new_fw, "x86")
    assert new.build_hash != old.build_hash
    keys = tmp_path / "update-keys"
    updatekey.write(keys / "pod-u1.key", KEY)
    emu = tmp_path / "emu"
    pod = flashed_pod("pod-u1", emu, old, KEY, seed=5, led_count=12)
    hostd = Hostd(tmp_path, mosquitto.port, pods_dir=emu)
    state = f"{P}/pod-u1/state"
    try:
        await pod.start()
        async with Watcher(mosquitto.port, filters=(f"{P}/+/state", f"{P}/+/update/result",
                                                    f"{P}/+/update/progress")) as watch:
            hostd.start()
            await wait_until(lambda: (watch.json(state) or {}).get("link") == "online", timeout=30, what="online")
            assert watch.json(state)["build_hash"] == f"0x{old.build_hash:08x}"
            await wait_until(lambda: (watch.json(state)["eeg"] or {}).get("samples", 0) > 250, timeout=15,
                             what="EEG flowing")

            proc = await _update(hostd, "--pod", "pod-u1", "--update-keys", str(keys), str(new_fw))
            # as the payload starts going, the cable is pulled for a moment
            samples = watch.json(state)["eeg"]["samples"]
            filler = pod.dir / "b" / "pod" / "filler.mpy"
            await wait_until(lambda: filler.exists() and filler.stat().st_size > 50_000, timeout=30, interval=0.002,
                             what="the payload going out")
            pod.unplug()
            await asyncio.sleep(0.5)
            pod.replug()
            # until the pod resets into the new build: no sample lost (the cable pull is replayed)
            await wait_until(lambda: (watch.json(f"{P}/pod-u1/update/progress") or {}).get("state") == "committed",
                             timeout=40, what="committed")
            eeg = watch.json(state)["eeg"]
            assert eeg["samples_lost"] == 0 and eeg["gaps_pod"] == 0 and eeg["samples"] > samples, eeg
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            text = out.decode()
            assert proc.returncode == 0, text
            assert f"pod-u1: ok, build 0x{new.build_hash:08x}" in text, text
            result = watch.json(f"{P}/pod-u1/update/result")
            assert result["result"] == "ok" and result["build_hash"] == f"0x{new.build_hash:08x}"
            assert watch.json(state)["build_hash"] == f"0x{new.build_hash:08x}"
            await wait_until(lambda: (watch.json(state)["update"] or {}).get("state") == "confirmed", what="shown")
            assert _schema_errors(watch.json(state)) == []
            resumed = re.search(r"pod-u1: the pod holds (\d+) of (\d+) bytes; resuming at byte (\d+)", hostd.log_text())
            assert resumed and 0 < int(resumed[3]) < int(resumed[2]), hostd.log_text()[-3000:]
            slots = json.loads((pod.dir / "slots.json").read_text())
            assert (slots["active"], slots["trial"]) == ("b", 0), slots  # confirmed: it stays
            assert (pod.dir / "b" / "pod" / "status.mpy").read_bytes() == dict(
                (f.path, f.data) for f in new.slot)["pod/status.mpy"]

            # a bundle tagged with another key: refused by the pod, nothing changes
            before = _flash(pod.dir)
            wrong = tmp_path / "wrong.key"
            updatekey.write(wrong, bytes(32))
            saved = tmp_path / "old.bundle"  # a bundle file, as `--save` writes it, untagged
            proc = await _update(hostd, "--save", str(saved), str(paths.FIRMWARE))
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0 and f"build 0x{old.build_hash:08x}" in out.decode(), out.decode()
            proc = await _update(hostd, "--all", "--update-key", str(wrong), str(saved))
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            text = out.decode()
            assert proc.returncode == 1, text
            assert "pod-u1: refused: the pod refused the bundle: auth" in text, text
            assert _flash(pod.dir) == before
            assert pod.counters.boots == 2 and watch.json(state)["link"] == "online"

            # parts hostd cannot take: answered with what is wrong, counted, hostd goes on
            bad = watch.json(state)["counters"]["host"]["commands_bad"]
            await watch.publish(f"{P}/pod-u1/update", b"not json")
            await wait_until(lambda: "not JSON" in ((watch.json(f"{P}/pod-u1/update/result") or {}).get("reason") or ""),
                             what="the garbage refused")
            part = json.loads(up.split(b"HLB1" + bytes(100), "short", 65536)[0])
            part["sha256"] = "0" * 64  # the bytes are not the ones announced
            await watch.publish(f"{P}/pod-u1/update", part)
            await wait_until(lambda: "sha256 of the parts differs" in (
                (watch.json(f"{P}/pod-u1/update/result") or {}).get("reason") or ""), what="the corrupt bundle refused")
            await wait_until(lambda: watch.json(state)["counters"]["host"]["commands_bad"] == bad + 2, what="counted")
            assert _flash(pod.dir) == before and hostd.proc.poll() is None
    finally:
        hostd.kill()
        await pod.stop()


async def test_a_pod_in_safe_mode_for_updates_takes_an_update_and_runs_it(mosquitto, tmp_path):
    old = bundle.build(paths.FIRMWARE, "x86")
    new_fw = _new_firmware(tmp_path)
    new = bundle.build(new_fw, "x86")
    keys = tmp_path / "update-keys"
    updatekey.write(keys / "pod-s1.key", KEY)
    emu = tmp_path / "emu"
    pod = flashed_pod("pod-s1", emu, old, KEY, seed=6, led_count=12)
    # three boots in a row that never ran: this one is safe mode for updates (boot.py)
    (pod.dir / "slots.json").write_text(json.dumps({"active": "a", "trial": 0, "tried": 0, "fails": 3, "safe": 0,
                                                    "back": 0}))
    hostd = Hostd(tmp_path, mosquitto.port, pods_dir=emu)
    state = f"{P}/pod-s1/state"
    try:
        await pod.start()
        async with Watcher(mosquitto.port, filters=(f"{P}/+/state",)) as watch:
            hostd.start()
            await wait_until(lambda: (watch.json(state) or {}).get("link") == "online", timeout=30, what="online")
            assert json.loads((pod.dir / "slots.json").read_text())["safe"] == 1  # no app: no EEG, LEDs dark
            assert not (watch.json(state)["eeg"] or {}).get("samples") and not any(pod.leds.last_rgb() or b"")
            proc = await _update(hostd, "--pod", "pod-s1", "--update-keys", str(keys), str(new_fw))
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, out.decode()
            slots = json.loads((pod.dir / "slots.json").read_text())
            assert (slots["active"], slots["trial"], slots["safe"]) == ("b", 0, 0), slots
            # the app runs again: EEG flows from the new build
            assert watch.json(state)["build_hash"] == f"0x{new.build_hash:08x}"
            n = (watch.json(state)["eeg"] or {}).get("samples", 0)
            await wait_until(lambda: (watch.json(state)["eeg"] or {}).get("samples", 0) > n + 250, timeout=15,
                             what="EEG from the new build")
    finally:
        hostd.kill()
        await pod.stop()
