"""Step 2: app files and pod.json into the board's filesystem over the raw REPL.

mpremote's serial transport does the talking (raw REPL, raw-paste flow
control). Each file is sent base64-encoded in chunks into ``<path>.tmp`` and
then renamed over ``<path>`` (LittleFS, the ESP32 port's default, renames
atomically), so a board unplugged mid-upload keeps whole files, old or new,
never half of one. Files of an older build that the new one no longer has
are removed, since the pod's build hash covers every file in ``pod/``.
Paths are relative: the filesystem root is the working directory on the
board and in the emulator. On an ESP32-S3 pod the REPL is MicroPython's USB
CDC, which ignores the baud rate.
"""
from __future__ import annotations

import base64
import time
from collections.abc import Callable

from .bundle import APP_DIR, Bundle
from .errors import NoAnswer, PortBusy, UploadFailed

CHUNK = 2048  # raw bytes per exec: base64 grows it to 2732, well within an ESP32's heap
_ROOT_APP = ("boot.py", "main.py", "hal.py", "hal.mpy")

Progress = Callable[[str, int, int], None]


def _transport(port: str, timeout_s: float):
    """Open the port and get a raw REPL, retrying while the board boots."""
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        t = None
        try:
            t = SerialTransport(port, baudrate=115200)
            _enter_raw_repl(t, timeout_s=1.0)
            return t
        except TransportError as exc:
            last = str(exc)
            if "failed to access" in last:
                try:
                    import serial

                    serial.Serial(port, exclusive=True).close()
                except serial.SerialException as busy:
                    if "lock" in str(busy):
                        raise PortBusy(f"{port}: port busy: another program has it open", step="upload") from None
                except OSError:
                    pass
        except OSError as exc:
            last = str(exc)
        if t is not None:
            try:
                t.close()
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise NoAnswer(
                f"{port}: no MicroPython REPL within {timeout_s:.0f} s ({last or 'no answer'}); if the pod "
                "firmware is already running it holds the port: hold SAFE while pressing RESET (safe mode) and retry",
                step="upload") from None
        time.sleep(0.3)


def _enter_raw_repl(t, timeout_s: float) -> None:
    """mpremote's enter_raw_repl without its soft reset and without printing on failure.

    Ctrl-C stops whatever runs, Ctrl-A asks for the raw REPL; on a board that
    is still booting the bytes are lost and the caller tries again.
    """
    from mpremote.transport import TransportError

    banner = b"raw REPL; CTRL-B to exit\r\n"
    t.serial.write(b"\r\x03")
    while t.serial.in_waiting:
        t.serial.read(t.serial.in_waiting)
    t.serial.write(b"\r\x01")
    data = t.read_until(1, banner, timeout_overall=timeout_s)
    if not data.endswith(banner):
        raise TransportError("could not enter raw repl")
    t.in_raw_repl = True


def _exec(t, code: str, what: str) -> bytes:
    from mpremote.transport import TransportError, TransportExecError

    try:
        return t.exec(code)
    except TransportExecError as exc:
        raise UploadFailed(f"{what}: the board said: {exc.error_output.strip().splitlines()[-1]}",
                           step="upload") from None
    except TransportError as exc:
        raise UploadFailed(f"{what}: {exc}", step="upload") from None


def _write(t, path: str, data: bytes, progress: Progress | None, done: int, total: int) -> int:
    tmp = path + ".tmp"
    _exec(t, f"f=open({tmp!r},'wb')\nw=f.write\nimport binascii\nd=binascii.a2b_base64", f"{path}: open")
    for i in range(0, len(data), CHUNK):
        chunk = base64.b64encode(data[i:i + CHUNK]).decode()
        _exec(t, f"w(d({chunk!r}))", f"{path}: write")
        done += min(CHUNK, len(data) - i)
        if progress is not None:
            progress("upload", done, total)
    _exec(t, f"f.close()\nimport os\nos.rename({tmp!r},{path!r})", f"{path}: rename")
    return done


def upload(port: str, bundle: Bundle, pod_json_for: Callable[[str], bytes], *,
           progress: Progress | None = None, timeout_s: float = 20.0, reset: bool = True) -> tuple[str, int]:
    """Write the app and pod.json, remove stale app files, then hard-reset.

    ``pod_json_for(mac)`` makes pod.json once the board's MAC (its
    ``machine.unique_id()``) is known. Returns (MAC, bytes of files uploaded).
    """
    t = _transport(port, timeout_s)
    try:
        uid = _exec(t, "import machine,binascii\nprint(binascii.hexlify(machine.unique_id()).decode())",
                    "read unique_id").decode().strip()
        mac = ":".join(uid[i:i + 2] for i in range(0, len(uid), 2))
        pod_json = pod_json_for(mac)
        _exec(t, f"import os\ntry:\n os.mkdir({APP_DIR!r})\nexcept OSError:\n pass", "mkdir pod")
        total = bundle.size + len(pod_json)
        done = 0
        for f in bundle.files:
            done = _write(t, f.path, f.data, progress, done, total)
        done = _write(t, "pod.json", pod_json, progress, done, total)
        # what an older build left behind would change the pod's build hash
        listing = _exec(t, f"import os\nprint([e[0] for e in os.ilistdir({APP_DIR!r}) if e[1]==0x8000])",
                        "list pod/").decode()
        present = {f"{APP_DIR}/{n}" for n in _literal(listing)}
        root = _exec(t, "import os\nprint([e[0] for e in os.ilistdir() if e[1]==0x8000])", "list /").decode()
        present |= {n for n in _literal(root) if n in _ROOT_APP}
        for stale in sorted(present - bundle.paths):
            _exec(t, f"import os\nos.remove({stale!r})", f"{stale}: remove")
        if reset:
            t.exec_raw_no_follow("import machine\nmachine.reset()")
        return mac, done
    finally:
        try:
            t.close()
        except OSError:
            pass


def _literal(text: str) -> list[str]:
    import ast

    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        raise UploadFailed(f"unexpected listing from the board: {text.strip()[:80]!r}", step="upload") from None
    return [str(v) for v in value]
