"""The open pages: one websocket each, fed through a bounded queue.

Every message for the pages goes through :meth:`Pages.send`; one about a pod's
EEG or band powers only to the pages watching that pod. Each page has its own
sender task and queue, so a slow browser delays no other. A page that falls
``QUEUE`` messages behind gets its queue replaced by a fresh snapshot: the pod
and circle views are states, not streams, so it loses only telemetry that it
could not have shown in time anyway (counted in ``resyncs``).
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Any, Callable

from aiohttp import web

from .auth import Session, Sessions
from .control import Bucket

log = logging.getLogger("hypnolum.console")

QUEUE = 2000
_RESYNC = object()


class Page:
    def __init__(self, ws: web.WebSocketResponse, session: Session, sessions: Sessions) -> None:
        self.id = secrets.token_hex(6)
        self.ws = ws
        self.session = session
        self.sessions = sessions
        self.watching: str | None = None
        self.bucket = Bucket()
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE)
        self.resyncs = 0

    @property
    def user(self) -> str:
        return self.session.user

    @property
    def role(self) -> str:
        """The role now: a session logged out or expired elsewhere steers no more."""
        if self.session.token and self.sessions.get(self.session.token) is None:
            return "viewer"
        return self.session.role

    def put(self, message: Any) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(_RESYNC)
            self.resyncs += 1


class Pages:
    def __init__(self, snapshot: Callable[[], list[dict]]) -> None:
        self.snapshot = snapshot
        self.open: dict[str, Page] = {}

    def send(self, message: dict, pod: str | None = None) -> None:
        """To every page (``pod`` given: to the pages watching that pod)."""
        text = json.dumps(message, separators=(",", ":"))
        for page in self.open.values():
            if pod is None or page.watching == pod:
                page.put(text)

    async def serve(self, page: Page, first: list[dict]) -> None:
        """Send ``first`` then the page's queue until the socket closes."""
        self.open[page.id] = page
        try:
            for message in first:
                await page.ws.send_str(json.dumps(message, separators=(",", ":")))
            while not page.ws.closed:
                item = await page.queue.get()
                if item is _RESYNC:
                    for message in self.snapshot():
                        await page.ws.send_str(json.dumps(message, separators=(",", ":")))
                else:
                    await page.ws.send_str(item)
        except (ConnectionError, RuntimeError) as exc:  # the browser went away mid-send
            log.debug("page %s: %s", page.id, exc)
        finally:
            self.open.pop(page.id, None)
