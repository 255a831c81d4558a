"""Updating a pod whose firmware predates updates over the link: through its MicroPython REPL.

Such a pod does not know UPDATE_BEGIN and the rest (its state lists them
under ``unsupported``), but it knows SAFE_MODE. hostd (docs/update.md, "Pods
that predate updates over the link"):

1. checks what it can before touching the pod: the bundle carries the root
   files (``boot.py``, ``main.py``), hostd holds the pod's update key
   (``updates.keys_dir`` / ``updates.key_file``) and the bundle is tagged with
   it, the pod is linked over a serial port and its REPL can be found
   (host/repl_port.py). Any of these failing is a refusal, and the pod goes
   on running its firmware;
2. takes the pod's port(s) from its own port scanner (``Hub.hold``) and
   sends SAFE_MODE: the pod resets with its LEDs dark and its app not
   started, and MicroPython's REPL answers on the board's USB CDC;
3. writes the build with the flash tool's own upload (hypnolum/flash/upload.py,
   raw REPL): boot.py and main.py at the root, the app into slot ``a/``,
   ``slots.json`` (slot a active, confirmed), the update key if the pod has
   none; the pod keeps its ``pod.json``; the app files of the layout before
   slots are removed; then a hard reset;
4. lets the ports go, waits for the pod to come back online with the new
   build hash and confirms it (UPDATE_CONFIRM), as after any update.

The old firmware has no slot to go back to: a new build that does not come
back is a ``timeout`` naming the way out (re-flash by hand).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..flash import bundle as fb
from ..flash import manifest as mf
from ..flash import updatekey, upload
from ..flash.errors import FlashError, NoAnswer, PortBusy
from ..protocol.messages import SAFE_MODE_CONFIRM
from . import repl_port
from . import state as st
from .session import CommandTimeout, NotOnline, PodSession
from .transport.serial import SerialTransport
from .update_parts import Packed

if TYPE_CHECKING:
    from .updates import Updates

log = logging.getLogger(__name__)

LINK_KINDS = {"BleTransport": "BLE", "UsbTransport": "raw USB (bulk endpoints)"}
SESSION_END_S = 5.0  # the pod's session ends this soon after its port is taken
RESET_S = 10.0  # native USB: the link's tty goes away this soon after SAFE_MODE (the pod resets)
PROGRESS_S = 0.5
BY_HAND = ("re-flash it by hand: hold SAFE, press RESET, then `hypnolum flash --no-image` "
           "(docs/flashing.md, \"Re-provisioning a pod\")")


class ReplRefused(Exception):
    """The update cannot go through the REPL; nothing on the pod changed."""


class ReplFailed(Exception):
    """The update through the REPL failed part way; the message says where the pod is left."""


def bundle_of(packed: Packed) -> fb.Bundle:
    """The flash tool's Bundle of what hostd was sent: the root files and the manifest's slot files."""
    build, entries = mf.decode(packed.manifest)
    slot, pos = [], 0
    for e in entries:
        slot.append(fb.AppFile(e.path, packed.payload[pos:pos + e.size]))
        pos += e.size
    root = tuple(fb.AppFile(path, data) for path, data in packed.root)
    return fb.Bundle(root, tuple(slot), "bundle", build, fb.slot_digest(slot))


class ReplUpdate:
    """One bundle to one pod that predates updates over the link."""

    def __init__(self, owner: Updates, pod_id: str, packed: Packed) -> None:
        self.owner = owner
        self.hub = owner.hub
        self.cfg = owner.hub.config.updates
        self.pod_id = pod_id
        self.b = packed
        self._said = 0.0
        self.key_given = False  # the pod had no update key and got one

    # -- 1. before touching the pod --------------------------------------------------
    def _key(self) -> bytes:
        where = self.cfg.key_file or self.cfg.keys_dir / f"{self.pod_id}.key"
        try:
            key = updatekey.read(Path(where))
        except FlashError as exc:
            raise ReplRefused(f"pod {self.pod_id}: no update key for it: {exc} (hostd gives the pod the key the "
                              "flash tool keeps for it: updates.keys_dir or updates.key_file)") from None
        if not hmac.compare_digest(mf.tag(key, self.b.manifest), self.b.tag):
            raise ReplRefused(f"pod {self.pod_id}: the bundle is not tagged with its update key ({where}), the key "
                              "hostd gives it")
        return key

    def _check(self, session: PodSession) -> repl_port.ReplPort:
        if not self.b.root:
            raise ReplRefused(f"pod {self.pod_id}: its firmware predates updates over the link, and the bundle "
                              "carries no boot.py and main.py to write through its REPL (a bundle file saved "
                              "before bundles carried them): send the firmware tree")
        transport = session.transport
        if not isinstance(transport, SerialTransport):
            kind = LINK_KINDS.get(type(transport).__name__, type(transport).__name__)
            raise ReplRefused(f"pod {self.pod_id}: its firmware predates updates over the link, so it is updated "
                              f"through its MicroPython REPL on USB, which hostd cannot reach: the pod is linked "
                              f"over {kind} ({transport.name}). Connect it to this host by USB and update again, "
                              f"or {BY_HAND}")
        try:
            return repl_port.locate(transport.name)
        except repl_port.NoRepl as exc:
            raise ReplRefused(f"pod {self.pod_id}: its firmware predates updates over the link and its REPL "
                              f"cannot be reached: {exc}; {BY_HAND}") from None

    # -- the update ---------------------------------------------------------------------
    async def run(self, session: PodSession) -> None:
        """Update the pod served by ``session``: ReplRefused, ReplFailed or the owner's TimedOut / Refused."""
        repl = self._check(session)
        key = self._key()
        app = bundle_of(self.b)
        link = session.transport.name
        tty = os.path.basename(os.path.realpath(link))
        ports = {link} if repl.same_port else {link, repl_port.find(repl) or link}
        log.info("update of pod %s through its REPL (%s): asking it into safe mode", self.pod_id,
                 "on its link's port" if repl.same_port else f"USB device {repl.usb_device.name}")
        self._show("safe_mode", 0, app.size, force=True)
        try:
            answer, reason = await session.command("safe_mode", {"confirm": SAFE_MODE_CONFIRM})
        except (NotOnline, CommandTimeout) as exc:
            raise ReplRefused(f"pod {self.pod_id}: SAFE_MODE not answered ({exc}); nothing was written (a pod "
                              "that reset all the same is in safe mode until its next reset)") from None
        if answer != "ack":
            raise ReplRefused(f"pod {self.pod_id}: the pod refused SAFE_MODE ({reason}); nothing was written")
        await self.hub.hold(ports)
        try:
            await self._session_ended(session)
            port = await self._repl_now(repl, tty)
            await self._upload(port, app, key)
        finally:
            self.hub.let_go(ports)

    async def _session_ended(self, session: PodSession) -> None:
        deadline = time.monotonic() + SESSION_END_S
        while self.hub.pods.get(self.pod_id) is session and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _repl_now(self, repl: repl_port.ReplPort, tty: str) -> str:
        """The REPL's port once the pod has reset into safe mode."""
        if repl.same_port:
            return repl.link
        deadline = time.monotonic() + RESET_S
        while not repl_port.link_gone(repl, tty) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + self.cfg.repl_timeout_s
        while (port := repl_port.find(repl)) is None:
            if time.monotonic() > deadline:
                raise ReplFailed(self._no_repl(f"no REPL tty (interface 0) on USB device {repl.usb_device.name} "
                                               f"within {self.cfg.repl_timeout_s:g} s"))
            await asyncio.sleep(0.1)
        return port

    def _no_repl(self, why: str) -> str:
        return (f"pod {self.pod_id}: asked into safe mode, but {why}; nothing was written: the pod is in safe mode "
                "(LEDs dark) with its old firmware, which runs again at its next reset (RESET or power)")

    async def _upload(self, port: str, app: fb.Bundle, key: bytes) -> None:
        loop = asyncio.get_running_loop()

        def progress(_step: str, done: int, total: int) -> None:
            loop.call_soon_threadsafe(self._show, "upload", done, total)

        def key_for(_mac: str) -> bytes:
            self.key_given = True
            return key

        try:
            _, sent = await asyncio.to_thread(upload.upload, port, app, lambda _mac: None, key_for=key_for,
                                              keep_key=True, progress=progress, timeout_s=self.cfg.repl_timeout_s)
        except NoAnswer:
            raise ReplFailed(self._no_repl(f"no MicroPython REPL answered on {port} within "
                                           f"{self.cfg.repl_timeout_s:g} s")) from None
        except PortBusy as exc:
            raise ReplFailed(self._no_repl(str(exc))) from None
        except FlashError as exc:
            raise ReplFailed(f"pod {self.pod_id}: writing the build through its REPL stopped part way: {exc}. The "
                             f"pod may not start: update it again, or {BY_HAND}") from None
        self._show("upload", sent, sent, force=True)
        log.info("update of pod %s: %d bytes written through its REPL on %s%s; the pod resets into build %08x",
                 self.pod_id, sent, port, ", with an update key" if self.key_given else "", self.b.build_hash)

    def _show(self, state: str, done: int, total: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._said >= PROGRESS_S:
            self._said = now
            update: dict[str, Any] = {"state": state, "received": done, "total": total,
                                      "build_hash": f"0x{self.b.build_hash:08x}"}
            session = self.hub.pods.get(self.pod_id)
            if session is not None and session.state.link == st.ONLINE:
                session.state.update = update
                session.changed()
            self.owner.progress(self.pod_id, update)
