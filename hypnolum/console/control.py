"""What a page may ask for, checked, and sent as the MQTT commands of docs/mqtt.md.

A page sends one JSON object per websocket message:

    {"op": "watch", "pod": "pod-01"}                       # any role: its EEG and band powers
    {"op": "set", "req": 7, "pod": "pod-01", "scene": {...}}   # or "circle": "c1": every pod of it
    {"op": "stop", "req": 8, "pod": "pod-01"}              # set {"stop": true}
    {"op": "marker", "req": 9, "pod": "pod-01", "text": "eyes closed"}   # or "circle"
    {"op": "timeline", "req": 10, "circle": "c1", "action": "start", "scene": {...}}  # or "stop"

Everything but ``watch`` needs an operator: the server refuses it from a viewer
whatever the page shows. A message that is too large, not JSON, of the wrong
shape, names an unknown pod or circle, or comes too fast is answered
``{"t": "error", "req": ..., "error": "...", "field": ...}``, counted by kind,
and nothing is published. A command that was published is answered once its
result arrives (``set/result``, ``marker/result``; a timeline when the broker
has it), to every page, so operators see each other's actions; no answer
within ``RESULT_TIMEOUT_S`` is reported as such.
"""
from __future__ import annotations

import itertools
import json
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from pydantic import ValidationError

from ..host.commands import SceneSpec
from ..host.inbound import Inbound, InboundError, Limits
from ..host.timeline import new_timeline
from ..protocol.ids import is_pod_id
from .live import PREFIX, LiveModel
from .mqtt_feed import Feed, FeedError

MAX_MESSAGE = 16 * 1024  # bytes of one page message
MAX_TEXT = 500  # characters of a marker
RESULT_TIMEOUT_S = 8.0  # hostd answers within ~2 s (4 attempts), or waits 2 s for a pod coming online
RATE_PER_S = 20.0  # commands a page may send a second, on average ...
BURST = 40  # ... and at once
CONTROL_OPS = ("set", "stop", "marker", "timeline")
OPS = ("watch",) + CONTROL_OPS


class PageLike(Protocol):
    id: str
    user: str
    role: str
    watching: str | None
    bucket: "Bucket"


class Refused(Exception):
    def __init__(self, kind: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.field = kind, message, field


@dataclass
class Bucket:
    """A token bucket: ``take()`` is False when the page sends faster than RATE_PER_S."""

    tokens: float = BURST
    at: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(BURST, self.tokens + (now - self.at) * RATE_PER_S)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class Pending:
    cmd_id: str | None
    pod: str
    what: str
    user: str
    page: str
    req: Any
    sent_at: float = field(default_factory=time.monotonic)


def result_text(result: dict) -> tuple[bool, str]:
    """(ok, words) of a hostd result payload, every field it gives shown."""
    ok = result.get("ok") is True
    if ok:
        extra = [f"{k} {v}" for k, v in result.items() if k not in ("id", "ok", "ack")]
        return True, "ok" + (f" ({', '.join(extra)})" if extra else "")
    if "nack" in result:
        head = f"refused by the pod: {result['nack']}"
    elif result.get("busy"):
        head = f"busy: {result.get('error', 'try again')}"
    else:
        head = str(result.get("error", "failed"))
    extra = [f"{k}: {json.dumps(v)}" for k, v in result.items()
             if k not in ("id", "ok", "nack", "error", "busy") and v is not None]
    return False, head + (f" ({'; '.join(extra)})" if extra else "")


class Control:
    def __init__(self, feed: Feed, model: LiveModel, broadcast: Callable[[dict], None]) -> None:
        self.feed = feed
        self.model = model
        self.broadcast = broadcast
        self.inbound = Inbound(Limits(max_payload=MAX_MESSAGE, max_depth=8))
        self.refused: Counter[str] = Counter()
        self.pending: dict[str, Pending] = {}
        self.markers: dict[str, deque[Pending]] = {}
        self._ids = itertools.count(1)
        self._prefix = f"console-{secrets.token_hex(3)}"

    # -- from the page ----------------------------------------------------------
    async def handle(self, page: PageLike, text: str | bytes) -> list[dict]:
        """Answer one page message: replies for that page (errors, watch changes)."""
        req = None
        try:
            data = self._decode(text)
            req = data.get("req")
            if req is not None and not (isinstance(req, int) and not isinstance(req, bool)
                                        or isinstance(req, str) and len(req) <= 64):
                req = None
                raise Refused("value", "req must be an integer or a short string", "req")
            op = data.get("op")
            if op not in OPS:
                raise Refused("value", f"op must be one of {', '.join(OPS)}, not {json.dumps(op)[:40]}", "op")
            if op in CONTROL_OPS and page.role != "operator":
                raise Refused("role", f"{op}: viewers cannot send commands (log in as an operator)", "op")
            if not page.bucket.take():
                raise Refused("rate", f"{op}: more than {RATE_PER_S:g} commands a second; not sent, try again")
            return await getattr(self, f"_{op}")(page, data, req)
        except Refused as exc:
            self.refused[exc.kind] += 1
            return [{"t": "error", "req": req, "error": exc.message, "field": exc.field}]

    def _decode(self, text: str | bytes) -> dict:
        size = len(text.encode() if isinstance(text, str) else text)
        if size > MAX_MESSAGE:
            raise Refused("size", f"message of {size} bytes, more than the limit of {MAX_MESSAGE}")
        try:
            data = self.inbound.decode("page", text)
        except InboundError as exc:
            raise Refused(exc.kind, exc.reason) from None
        if not isinstance(data, dict):
            raise Refused("value", f"a message must be a JSON object, not {type(data).__name__}")
        return data

    def _pods(self, data: dict) -> tuple[list[str], str]:
        """The pods a command is for (``pod`` or ``circle``), and how to name them."""
        if "circle" in data:
            name = data["circle"]
            circle = self.model.circles.get(name) if isinstance(name, str) else None
            if circle is None or not circle.pods():
                raise Refused("unknown", f"unknown circle {json.dumps(name)[:80]}: no definition on the broker",
                              "circle")
            return circle.pods(), f"circle {name}"
        pod = data.get("pod")
        if not is_pod_id(pod):
            raise Refused("value", f"pod must be a pod id, not {json.dumps(pod)[:80]}", "pod")
        if not self.model.known(pod):
            raise Refused("unknown", f"unknown pod {pod!r}: no hostd has reported it", "pod")
        return [pod], pod

    @staticmethod
    def _scene(data: dict) -> dict:
        scene = data.get("scene")
        if not isinstance(scene, dict):
            raise Refused("value", "scene must be an object", "scene")
        try:
            SceneSpec.model_validate(scene)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(["scene", *(str(p) for p in err["loc"])])
            raise Refused("value", f"{where}: {err['msg']}", where) from None
        return scene

    async def _watch(self, page: PageLike, data: dict, req: Any) -> list[dict]:
        pod = data.get("pod")
        if pod is not None:
            self._pods({"pod": pod})
        if page.watching is not None:
            await self.feed.unwatch(page.watching)
        page.watching = pod
        if pod is not None:
            await self.feed.watch(pod)
        return [{"t": "watching", "req": req, "id": pod}]

    async def _set(self, page: PageLike, data: dict, req: Any) -> list[dict]:
        pods, _target = self._pods(data)
        scene = self._scene(data)
        for pod in pods:
            await self._command(page, req, pod, f"scene {scene['effect']}", {"scene": scene})
        return []

    async def _stop(self, page: PageLike, data: dict, req: Any) -> list[dict]:
        pods, _target = self._pods({"pod": data.get("pod")})
        await self._command(page, req, pods[0], "stop", {"stop": True})
        return []

    async def _marker(self, page: PageLike, data: dict, req: Any) -> list[dict]:
        pods, _target = self._pods(data)
        text = data.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise Refused("value", f"text: 1..{MAX_TEXT} characters are required", "text")
        for pod in pods:
            pending = Pending(None, pod, f"marker {text[:40]!r}", page.user, page.id, req)
            queue = self.markers.setdefault(pod, deque())
            queue.append(pending)
            try:
                await self.feed.publish(f"{PREFIX}/pods/{pod}/marker", json.dumps({"text": text}).encode())
            except FeedError as exc:
                queue.remove(pending)
                self._answer(pending, False, str(exc))
        return []

    async def _timeline(self, page: PageLike, data: dict, req: Any) -> list[dict]:
        name = data.get("circle")
        pods, target = self._pods({"circle": name})
        action = data.get("action")
        topic = f"{PREFIX}/circles/{name}/timeline"
        if action == "start":
            scene = SceneSpec.model_validate(self._scene(data))
            lead_ms = self.model.circles[name].lead_ms()
            payload = new_timeline(scene, lead_ms).model_dump_json(exclude_defaults=False).encode()
            what, done = f"timeline {scene.effect}", f"published: starts in {lead_ms} ms on {len(pods)} pods"
        elif action == "stop":
            payload, what, done = b"", "timeline stop", "cleared: the pods keep their last scene"
        else:
            raise Refused("value", "action must be start or stop", "action")
        pending = Pending(None, target, what, page.user, page.id, req)
        try:
            await self.feed.publish(topic, payload, retain=True)
        except FeedError as exc:
            self._answer(pending, False, str(exc))
        else:
            self._answer(pending, True, done)
        return []

    async def _command(self, page: PageLike, req: Any, pod: str, what: str, body: dict) -> None:
        cmd_id = f"{self._prefix}-{next(self._ids)}"
        pending = self.pending[cmd_id] = Pending(cmd_id, pod, what, page.user, page.id, req)
        try:
            await self.feed.publish(f"{PREFIX}/pods/{pod}/set", json.dumps({"id": cmd_id, **body}).encode())
        except FeedError as exc:
            self.pending.pop(cmd_id, None)
            self._answer(pending, False, str(exc))

    # -- from hostd ---------------------------------------------------------------
    def on_result(self, pod: str, leaf: str, result: dict) -> None:
        """A ``set/result`` or ``marker/result`` came: answer the command it belongs to."""
        if leaf == "set":
            cmd_id = result.get("id")
            pending = self.pending.pop(cmd_id, None) if isinstance(cmd_id, str) else None
        else:  # a marker result names no marker: they come in the order they were sent
            queue = self.markers.get(pod)
            pending = queue.popleft() if queue else None
        if pending is not None:
            self._answer(pending, *result_text(result))

    def sweep(self) -> None:
        """Report the commands that got no result in time."""
        cutoff = time.monotonic() - RESULT_TIMEOUT_S
        late = [p for p in self.pending.values() if p.sent_at < cutoff]
        for queue in self.markers.values():
            while queue and queue[0].sent_at < cutoff:
                late.append(queue.popleft())
        for pending in late:
            if pending.cmd_id is not None:
                self.pending.pop(pending.cmd_id, None)
            self._answer(pending, False, f"no result within {RESULT_TIMEOUT_S:g} s: is a hostd holding "
                                         f"{pending.pod} running?")

    def _answer(self, pending: Pending, ok: bool, text: str) -> None:
        self.broadcast({"t": "result", "req": pending.req, "page": pending.page, "by": pending.user,
                        "target": pending.pod, "what": pending.what, "ok": ok, "text": text[:500],
                        "at": time.time()})

    def stats(self) -> dict[str, Any]:
        return {"refused": dict(self.refused), "pending": len(self.pending) + sum(map(len, self.markers.values()))}
