"""One board, start to finish: image, app + config, reset, verify, log.

Runs in a worker thread (esptool and mpremote block); every failure becomes
an :class:`Outcome` with the step and a message, never an exception, so one
bad board in a batch does not stop the others.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypnolum.host import repl_port

from . import boards, flashlog, provision, updatekey, upload, verify
from .bundle import Bundle
from .errors import FlashError
from .image import FlashResult, Image, flash_image

Progress = Callable[[str, int, int], None]
Say = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    bundle: Bundle
    settings: dict[str, Any]  # validated provisioning settings, pod_id possibly absent
    image: Image | None = None  # None: leave the flashed MicroPython as it is
    upload: bool = True  # False: verify only
    baud: int = 460800
    before: str = "default-reset"
    after: str = "hard-reset"
    stub: bool = True
    erase: bool = False
    boot_timeout_s: float = 20.0
    log_path: Path | None = None
    update_key: bytes | None = None  # the fleet key; None: each pod's own, from update_keys_dir
    update_keys_dir: Path = Path("update-keys")
    ble_pair: bool = False  # write the BLE pairing-window flag (firmware/pod/ble.py PAIR_FLAG)
    usb_backend: Any = None  # pyusb's backend for a pod link on the vendor interface (None: libusb-1.0)


BLE_PAIR_FLAG = "ble_pair.flag"  # at the root: the pod consumes it at boot and opens its pairing window


@dataclass
class Outcome:
    port: str
    ok: bool = False
    mac: str = ""
    chip: str = ""
    pod_id: str = ""
    step: str = ""
    error: str = ""
    kind: str = ""
    seconds: float = 0.0
    uploaded_bytes: int = 0
    hello: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the tool did that the technician should know


def run_board(board: boards.Board, opts: Options, progress: Progress | None = None,
              say: Say | None = None) -> Outcome:
    """Flash, provision and verify one board; ``say`` is told what the technician should know."""
    out = Outcome(board.port)
    t0 = time.monotonic()
    step = "open"
    tell = progress or (lambda stage, done, total: None)
    cfg: provision.Provision | None = None

    def pod_json_for(mac: str) -> bytes:
        nonlocal cfg
        out.mac = out.mac or mac
        settings = dict(opts.settings)
        settings.setdefault("pod_id", provision.default_pod_id(out.mac))
        cfg = provision.make(settings, where=board.port)
        out.pod_id = cfg.pod_id
        return cfg.pod_json()

    def note(text: str) -> None:
        out.notes.append(text)
        if say is not None:
            say(text)

    def key_for(_mac: str) -> bytes:
        # after pod_json_for: the pod id is known
        if opts.update_key is not None:
            return opts.update_key
        return updatekey.for_pod(opts.update_keys_dir, out.pod_id)

    try:
        boards.check_free(board.port)
        link = repl_port.link_finder(board.port)  # before any reset: the REPL's tty may come back renamed
        if opts.image is not None:
            step = "image"
            tell("connect", 0, 1)
            res = FlashResult()
            try:
                flash_image(board.port, opts.image, baud=opts.baud, before=opts.before, after=opts.after,
                            stub=opts.stub, erase=opts.erase, progress=tell, result=res)
            finally:
                out.chip, out.mac = res.chip, res.mac
        if opts.upload:
            step = "upload"
            tell("upload", 0, opts.bundle.size)
            files = [(BLE_PAIR_FLAG, b"1")] if opts.ble_pair else []
            _, out.uploaded_bytes = upload.upload(board.port, opts.bundle, pod_json_for, key_for=key_for,
                                                  progress=tell, timeout_s=opts.boot_timeout_s, files=files,
                                                  note=note)
        else:
            pod_json_for(out.mac or "00:00:00:00:00:00")
        step = "verify"
        tell("verify", 0, 1)
        want_id = opts.settings.get("pod_id") or out.pod_id
        fields = verify.hello(link, opts.boot_timeout_s, name=board.port, usb_backend=opts.usb_backend)
        out.hello = fields
        if not opts.upload and "pod_id" not in opts.settings:
            want_id = fields.get("pod_id", "")  # verify-only without --pod-id: take the pod's word
        out.pod_id = want_id
        verify.check(fields, verify.Expected(opts.bundle.build_hash, want_id, cfg.led_count))
        out.ok = True
        tell("done", 1, 1)
    except FlashError as exc:
        out.step, out.error, out.kind = exc.step or step, str(exc), exc.kind
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure still fails this board only, and is logged
        out.step, out.error, out.kind = step, f"{type(exc).__name__}: {exc}", "internal"
    out.seconds = round(time.monotonic() - t0, 2)
    if opts.log_path is not None:
        flashlog.append(opts.log_path, record(out, opts))
    return out


def record(out: Outcome, opts: Options) -> dict[str, Any]:
    rec = {
        "time": flashlog.now_iso(),
        "port": out.port,
        "mac": out.mac or None,
        "chip": out.chip or None,
        "pod_id": out.pod_id or None,
        "image": str(opts.image.path) if opts.image else None,
        "image_sha256": opts.image.sha256 if opts.image else None,
        "app_hash": f"{opts.bundle.build_hash:#010x}",
        "app_sha256": opts.bundle.sha256,
        "app_format": opts.bundle.format,
        "fingerprint": f"{out.hello.get('fingerprint', 0):#010x}" if out.hello else None,
        "result": "ok" if out.ok else "failed",
        "seconds": out.seconds,
    }
    if out.notes:
        rec["notes"] = list(out.notes)
    if not out.ok:
        rec.update(step=out.step, error=out.error, kind=out.kind)
    return rec
