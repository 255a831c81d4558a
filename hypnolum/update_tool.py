"""``hypnolum update``: send pods a new firmware build through hostd, over MQTT.

The bundle is a firmware tree (``firmware/``: compiled as the flash tool
compiles it, ``--app-format``) or a bundle file this command wrote
(``--save FILE``). For each pod the manifest is tagged with the pod's update
key (the flash tool's key directory, ``--update-keys DIR`` holding
``<pod id>.key``, or the fleet's key, ``--update-key FILE``), packed, cut
into parts within hostd's MQTT payload limit and published on
``pods/<id>/update`` (host/update_parts.py), with the firmware's ``boot.py``
and ``main.py`` for a pod that predates updates over the link (hostd then
writes the build through the pod's REPL). hostd carries the update out and
answers on ``pods/<id>/update/result``; its progress comes on
``pods/<id>/update/progress``. docs/update.md, "The command".

Exit status: 0 every pod updated, 1 a pod refused or failed, 2 usage error,
3 no broker or no answer in time.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt

from . import mqtt_options as mo
from .flash import bundle as fb
from .flash import manifest as mf
from .flash import updatekey
from .flash.errors import FlashError
from .host import update_parts as up
from .host.config import MqttConfig
from .host.topics import PREFIX, TopicError
from .host.topics import pod as pod_topic
from .protocol.ids import pod_id_problem

DEFAULT_TIMEOUT_S = 300.0
_NO_TAG = bytes(up.TAG_SIZE)  # a bundle file carries no tag: each pod's is made with its key


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hypnolum update",
                                description="Update pods' firmware through hostd: over the link, or through "
                                            "the REPL of a pod that predates updates over the link (docs/update.md).",
                                epilog="exit status: 0 every pod updated, 1 a pod refused or failed, 2 usage error, "
                                       "3 no broker or no answer")
    who = p.add_mutually_exclusive_group()  # one of them, unless --save
    who.add_argument("--pod", action="append", metavar="ID", help="a pod to update (repeat for more)")
    who.add_argument("--all", action="store_true", help="every pod hostd reports online")
    p.add_argument("bundle", metavar="BUNDLE", type=Path,
                   help="a firmware tree (with boot.py, main.py, pod/) or a bundle file written with --save")
    p.add_argument("--app-format", choices=fb.FORMATS, default="xtensawin",
                   help="how a firmware tree is compiled (default xtensawin, an ESP32; x86 for emulated boards)")
    keys = p.add_argument_group("update keys (as the flash tool keeps them)")
    keys.add_argument("--update-key", type=Path, metavar="FILE", help="the fleet's key for every pod")
    keys.add_argument("--update-keys", type=Path, default=Path("update-keys"), metavar="DIR",
                      help="each pod's own key as DIR/<pod id>.key (default: update-keys)")
    keys.add_argument("--new-key", action="store_true",
                      help="make DIR/<pod id>.key for a pod that has none yet, as the flash tool does at a first "
                           "flashing: a pod whose firmware predates updates over the link gets it from hostd")
    p.add_argument("--confirm-s", type=float, default=up.DEFAULT_CONFIRM_S, metavar="S",
                   help="how long a new build waits for hostd's confirmation before rolling back (default 30)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"how long to wait for every result (default {DEFAULT_TIMEOUT_S:g} s)")
    p.add_argument("--save", type=Path, metavar="FILE", help="write the bundle to FILE (no pod needed) and stop")
    mo.add_arguments(p)
    return p


Root = tuple[tuple[str, bytes], ...]


def load_bundle(path: Path, fmt: str) -> tuple[bytes, bytes, Root]:
    """(manifest, payload, root files) of a firmware tree or a bundle file; UsageError naming what is wrong."""
    if path.is_dir():
        try:
            app = fb.build(path, fmt)
            return mf.encode(app), mf.payload(app), tuple((f.path, f.data) for f in app.root)
        except FlashError as exc:
            raise mo.UsageError(f"hypnolum update: {exc}") from None
    try:
        packed = up.unpack(path.read_bytes())
    except OSError as exc:
        raise mo.UsageError(f"hypnolum update: {path}: {exc.strerror or exc}") from None
    except up.BadPart as exc:
        raise mo.UsageError(f"hypnolum update: {path}: not a bundle: {exc}") from None
    return packed.manifest, packed.payload, packed.root


def _key(args: argparse.Namespace, pod_id: str) -> bytes:
    path = args.update_keys / f"{pod_id}.key"
    try:
        if args.update_key is not None:
            return updatekey.read(args.update_key)
        if args.new_key and not path.exists():
            key = updatekey.for_pod(args.update_keys, pod_id)
            print(f"{pod_id}: made its update key {path}", flush=True)
            return key
        return updatekey.read(path)
    except FlashError as exc:
        hint = ""
        if args.update_key is None and not path.exists():
            hint = " (a pod whose firmware predates updates over the link has none yet: --new-key makes one)"
        raise mo.UsageError(f"hypnolum update: pod {pod_id}: {exc}{hint}") from None


def _pods(args: argparse.Namespace) -> list[str]:
    for pod_id in args.pod or []:
        if problem := pod_id_problem(pod_id):
            raise mo.UsageError(f"hypnolum update: --pod {pod_id!r}: {problem}")
        try:
            pod_topic(pod_id, "update")
        except TopicError as exc:
            raise mo.UsageError(f"hypnolum update: --pod: {exc}") from None
    return list(dict.fromkeys(args.pod or []))


async def _online_pods(client: aiomqtt.Client, wait_s: float = 1.5) -> list[str]:
    """The pods whose retained availability says online."""
    await mo.subscribe(client, f"{PREFIX}/pods/+/availability")
    found: dict[str, bool] = {}

    async def read() -> None:
        async for message in client.messages:
            parts = message.topic.value.split("/")
            found[parts[3]] = bytes(message.payload or b"") == b"online"

    try:
        async with asyncio.timeout(wait_s):
            await read()
    except TimeoutError:
        pass
    await client.unsubscribe(f"{PREFIX}/pods/+/availability")
    return sorted(p for p, online in found.items() if online)


def _line(pod_id: str, result: dict[str, Any]) -> str:
    way = " through its REPL" if result.get("path") == "repl" else ""
    if result.get("ok"):
        return f"{pod_id}: ok, build {result.get('build_hash')} in {result.get('seconds')} s{way}"
    return f"{pod_id}: {result.get('result')}{way}: {result.get('reason')}"


async def run(cfg: MqttConfig, args: argparse.Namespace, manifest: bytes, payload: bytes,
              root: Root = ()) -> dict[str, dict]:
    """Publish the bundle to each pod and wait for every result: {pod id: result}."""
    async with mo.connect(cfg, "update") as (client, _v5):
        pods = _pods(args) if not args.all else await _online_pods(client)
        if not pods:
            raise mo.UsageError("hypnolum update: --all: no pod is online")
        keys = {p: _key(args, p) for p in pods}
        ids = {p: f"upd-{secrets.token_hex(6)}" for p in pods}
        for p in pods:
            await mo.subscribe(client, pod_topic(p, "update/result"))
            await mo.subscribe(client, pod_topic(p, "update/progress"), qos=0)
        for p in pods:
            blob = up.pack(manifest, mf.tag(keys[p], manifest), payload, root)
            for part in up.split(blob, ids[p], cfg.max_payload, args.confirm_s):
                await client.publish(pod_topic(p, "update"), part, qos=1)
            print(f"{p}: bundle sent to hostd ({len(blob)} bytes)", flush=True)
        results: dict[str, dict] = {}
        said: dict[str, float] = {}
        deadline = time.monotonic() + args.timeout

        async def read() -> None:
            async for message in client.messages:
                parts = message.topic.value.split("/")
                pod_id, leaf = parts[3], "/".join(parts[4:])
                if pod_id not in ids:
                    continue
                try:
                    body = json.loads(message.payload)
                except ValueError:
                    continue
                if leaf == "update/result" and body.get("id") in (ids[pod_id], None) and pod_id not in results:
                    results[pod_id] = body
                    print(_line(pod_id, body), flush=True)
                    if len(results) == len(pods):
                        return
                elif leaf == "update/progress" and time.monotonic() - said.get(pod_id, 0) >= 1:
                    said[pod_id] = time.monotonic()
                    total = body.get("total") or 0
                    got = body.get("received") or 0
                    pct = f" ({100 * got // total}%)" if total else ""
                    print(f"{pod_id}: {body.get('state')} {got}/{total}{pct}", flush=True)

        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await read()
        except TimeoutError:
            for p in pods:
                if p not in results:
                    print(f"{p}: no result from hostd within {args.timeout:g} s", flush=True)
        except aiomqtt.MqttError as exc:
            raise mo.Unreachable(f"lost the connection to the broker: {exc}") from None
        return results


def main(argv: list[str] | None = None) -> int:
    def go() -> int:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:
            return int(exc.code or 0)
        if not 0 < args.timeout <= 3600:
            raise mo.UsageError("hypnolum update: --timeout must be between 0 and 3600 s")
        if not 1 <= args.confirm_s <= 600:
            raise mo.UsageError("hypnolum update: --confirm-s must be between 1 and 600 s")
        if args.new_key and args.update_key is not None:
            raise mo.UsageError("hypnolum update: --new-key makes a pod's own key in --update-keys DIR, "
                                "not with the fleet's --update-key")
        manifest, payload, root = load_bundle(args.bundle, args.app_format)
        if args.save is not None:
            args.save.write_bytes(up.pack(manifest, _NO_TAG, payload, root))
            print(f"wrote {args.save}: build {mf.decode(manifest)[0]:#010x}, {len(payload)} bytes")
            return mo.EXIT_OK
        if not args.pod and not args.all:
            raise mo.UsageError("hypnolum update: name the pods: --pod ID (repeat for more) or --all")
        pods = _pods(args)
        for p in pods:
            _key(args, p)  # every key readable before anything is sent
        cfg = mo.mqtt_config(args)
        results = asyncio.run(run(cfg, args, manifest, payload, root))
        wanted = pods or list(results)
        if any(p not in results for p in wanted):
            return mo.EXIT_NO_ANSWER
        return mo.EXIT_OK if all(results[p].get("ok") for p in wanted) else mo.EXIT_REFUSED

    return mo.run_tool(go, prefix="hypnolum update")


if __name__ == "__main__":
    sys.exit(main())
