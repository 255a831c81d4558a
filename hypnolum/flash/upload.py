"""Step 2: app files, pod.json and the update key into the board's filesystem over the raw REPL.

mpremote's serial transport does the talking (raw REPL, raw-paste flow
control). Each file is sent base64-encoded in chunks into ``<path>.tmp`` and
then renamed over ``<path>`` (LittleFS, the ESP32 port's default, renames
atomically), so a board unplugged mid-upload keeps whole files, old or new,
never half of one. boot.py and main.py go to the root, the app into slot
``a/`` (docs/update.md); then ``slots.json`` makes ``a`` the active slot,
confirmed. Only then is the rest removed: files of an older build that the
new one no longer has (the pod's build hash covers every file in the slot),
slot ``b`` with any update under way into it, and the app files of the
layout before slots (``hal.*`` and ``pod/`` at the root).
Paths are relative: the filesystem root is the working directory on the
board and in the emulator. On an ESP32-S3 pod the REPL is MicroPython's USB
CDC, which ignores the baud rate.

A board that holds the pod firmware (``main.py`` beside ``slots.json``, or
beside ``hal.*`` at the root as before slots; a fresh MicroPython has only
the ``boot.py`` its first boot writes: ports/esp32/modules/inisetup.py:47-55)
may have a watchdog armed although its REPL answers: the Ctrl-C that got the
REPL stopped a running app (MicroPython's CDC raises KeyboardInterrupt in
main.py: shared/tinyusb/mp_usbd_cdc.c:79-83, v1.28.0), or the app had ended
on its own; ``machine.WDT`` cannot be stopped and nothing feeds it in the
REPL, so it would reset the board mid-upload. Before writing anything such a board is restarted
in safe mode the firmware's own way (``safe_mode.flag``, which
``hal.safe_mode()`` takes at boot: boot.py then arms no watchdog and main.py
starts nothing), and the REPL of that boot is the one written to.
"""
from __future__ import annotations

import base64
import time
from collections.abc import Callable

from .bundle import APP_DIR, FIRST_SLOT, SLOTS, Bundle
from .updatekey import KEY_SIZE
from .updatekey import POD_FILE as KEY_FILE
from .errors import NoAnswer, PortBusy, UploadFailed

MAIN_FILE = "main.py"  # the pod firmware's starts the app; its boot.py arms the watchdog first
SAFE_FLAG = "safe_mode.flag"  # firmware/hal.py SAFE_MODE_FLAG: the next boot is a safe-mode boot
INTERRUPTED = b"KeyboardInterrupt"  # in the traceback a running app prints when Ctrl-C stops it

CHUNK = 2048  # raw bytes per exec: base64 grows it to 2732, well within an ESP32's heap
_OLD_ROOT_APP = ("hal.py", "hal.mpy")  # the app's root files before slots
STATE_FILE = "slots.json"
PENDING_FILE = "update.man"  # an update under way (firmware/pod/update.py)
# slots.json of a freshly flashed pod: slot a active, confirmed, no boots counted
FIRST_STATE = b'{"active": "%s", "trial": 0, "tried": 0, "fails": 0, "safe": 0, "back": 0}' % FIRST_SLOT.encode()

Progress = Callable[[str, int, int], None]
Note = Callable[[str], None]


def _transport(port: str, timeout_s: float, *, interrupt: bool = True, heard: bytearray | None = None):
    """Open the port and get a raw REPL, retrying while the board boots; ``heard`` collects what
    the board said first (a stopped app's traceback). ``interrupt``: send Ctrl-C first."""
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        t = None
        try:
            t = SerialTransport(port, baudrate=115200)
            _enter_raw_repl(t, timeout_s=1.0, interrupt=interrupt, heard=heard)
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


def _enter_raw_repl(t, timeout_s: float, interrupt: bool = True, heard: bytearray | None = None) -> None:
    """mpremote's enter_raw_repl without its soft reset and without printing on failure.

    Ctrl-C stops whatever runs (unless not ``interrupt``), Ctrl-A asks for the raw REPL;
    on a board that is still booting the bytes are lost and the caller tries again.
    What the board says before the raw REPL's banner is added to ``heard``.
    """
    from mpremote.transport import TransportError

    banner = b"raw REPL; CTRL-B to exit\r\n"
    said = bytearray()
    if interrupt:
        t.serial.write(b"\r\x03")
        while t.serial.in_waiting:
            said += t.serial.read(t.serial.in_waiting)
    t.serial.write(b"\r\x01")
    data = _read_until(t.serial, banner, timeout_s)
    if heard is not None:
        heard += said + data
    if not data.endswith(banner):
        raise TransportError("could not enter raw repl")
    t.in_raw_repl = True


def _read_until(ser, ending: bytes, timeout_s: float) -> bytes:
    """Bytes from the port up to and including ``ending``, or what came within ``timeout_s``.

    Only bytes already waiting are read, one at a time: nothing after ``ending`` (the raw
    REPL's prompt is mpremote's to read), and a silent board cannot hold the caller past
    ``timeout_s`` (mpremote reads a /dev/pts path blocking)."""
    data = bytearray()
    deadline = time.monotonic() + timeout_s
    while not data.endswith(ending) and time.monotonic() < deadline:
        if ser.in_waiting:
            data += ser.read(1)
        else:
            time.sleep(0.01)
    return bytes(data)


def _exec(t, code: str, what: str) -> bytes:
    from mpremote.transport import TransportError, TransportExecError

    try:
        return t.exec(code)
    except TransportExecError as exc:
        raise UploadFailed(f"{what}: the board said: {exc.error_output.strip().splitlines()[-1]}",
                           step="upload") from None
    except TransportError as exc:
        raise UploadFailed(f"{what}: {exc}", step="upload") from None


def _restart_in_safe_mode(t, port: str, timeout_s: float, was_running: bool, note: Note | None):
    """Write the safe-mode request, reset, and return a raw REPL of the safe-mode boot.

    No Ctrl-C on the way back: only a board where nothing runs answers (a safe-mode boot's
    main.py starts nothing). A board whose boot took no request (the flag is still there) is
    not written to."""
    from mpremote.transport import TransportError

    _exec(t, f"f=open({SAFE_FLAG!r},'wb')\nf.write(b'1')\nf.close()", f"{SAFE_FLAG}: write")
    try:
        t.exec_raw_no_follow("import machine\nmachine.reset()")
    except TransportError as exc:
        raise UploadFailed(f"reset into safe mode: {exc}", step="upload") from None
    t.close()
    t = _transport(port, timeout_s, interrupt=False)
    if _size(t, SAFE_FLAG) >= 0:
        _exec(t, f"import os\nos.remove({SAFE_FLAG!r})", f"{SAFE_FLAG}: remove")
        t.close()
        raise UploadFailed(f"{port}: restarted for safe mode, but its boot did not take {SAFE_FLAG} (its watchdog "
                           "may be armed); nothing was written: hold SAFE while pressing RESET (safe mode) and retry",
                           step="upload")
    if note is not None:
        note("the firmware was running: restarted it in safe mode" if was_running
             else "the pod firmware is on the board: restarted it in safe mode (no watchdog there)")
    return t


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


def upload(port: str, bundle: Bundle, pod_json_for: Callable[[str], bytes | None], *,
           key_for: Callable[[str], bytes] | None = None, keep_key: bool = False,
           progress: Progress | None = None, timeout_s: float = 20.0, reset: bool = True,
           files: list[tuple[str, bytes]] | None = None, note: Note | None = None) -> tuple[str, int]:
    """Write the app, pod.json and the update key, make slot a active, remove stale files, then hard-reset.

    A board with the pod firmware on it is first restarted in safe mode (see the module's
    docstring); ``note`` is told so, in words for the person at the bench.

    ``files``: more (path, bytes) to write at the root (the BLE pairing-window flag).

    ``pod_json_for(mac)`` makes pod.json once the board's MAC (its
    ``machine.unique_id()``) is known (None: the board keeps the pod.json it
    has); ``key_for(mac)`` then gives the pod's update key (32 bytes; None: the
    board keeps the key it has). With ``keep_key`` a board that holds a key
    (32 bytes) keeps it and ``key_for`` is not asked. Returns (MAC, bytes of files uploaded).
    """
    heard = bytearray()
    t = _transport(port, timeout_s, heard=heard)
    try:
        if _has_pod_firmware(t):
            t = _restart_in_safe_mode(t, port, timeout_s, INTERRUPTED in heard, note)
        uid = _exec(t, "import machine,binascii\nprint(binascii.hexlify(machine.unique_id()).decode())",
                    "read unique_id").decode().strip()
        mac = ":".join(uid[i:i + 2] for i in range(0, len(uid), 2))
        pod_json = pod_json_for(mac)
        key = None
        if key_for is not None and not (keep_key and _size(t, KEY_FILE) == KEY_SIZE):
            key = key_for(mac)
        for d in (FIRST_SLOT, f"{FIRST_SLOT}/{APP_DIR}"):
            _exec(t, f"import os\ntry:\n os.mkdir({d!r})\nexcept OSError:\n pass", f"mkdir {d}")
        extra = ([("pod.json", pod_json)] if pod_json is not None else []) + \
            ([(KEY_FILE, key)] if key is not None else []) + list(files or [])
        total = bundle.size + sum(len(data) for _, data in extra) + len(FIRST_STATE)
        done = 0
        for f in bundle.files:
            done = _write(t, f.path, f.data, progress, done, total)
        for path, data in extra + [(STATE_FILE, FIRST_STATE)]:
            done = _write(t, path, data, progress, done, total)
        for stale in _stale(t, bundle):
            _exec(t, f"import os\ntry:\n os.remove({stale!r})\nexcept OSError:\n os.rmdir({stale!r})",
                  f"{stale}: remove")
        if reset:
            t.exec_raw_no_follow("import machine\nmachine.reset()")
        return mac, done
    finally:
        try:
            t.close()
        except OSError:
            pass


def _has_pod_firmware(t) -> bool:
    """The pod firmware is on the board (either layout): its boot honours safe_mode.flag."""
    files, _ = _listing(t, "") or ([], [])
    return MAIN_FILE in files and (STATE_FILE in files or any(n in files for n in _OLD_ROOT_APP))


def _size(t, path: str) -> int:
    """The size of a file on the board; -1 if it is absent."""
    out = _exec(t, f"import os\ntry:\n print(os.stat({path!r})[6])\nexcept OSError:\n print(-1)",
                f"stat {path}").decode()
    try:
        return int(out.strip())
    except ValueError:
        raise UploadFailed(f"unexpected answer from the board to stat {path}: {out.strip()[:80]!r}",
                           step="upload") from None


def _listing(t, path: str) -> tuple[list[str], list[str]] | None:
    """(files, directories) in a directory on the board; None if it is absent."""
    arg = repr(path) if path else ""  # the root: ilistdir() lists the working directory
    out = _exec(t, f"import os\ntry:\n print([(e[0],e[1]) for e in os.ilistdir({arg})])\n"
                   "except OSError:\n print('None')", f"list {path or '/'}").decode()
    if out.strip() == "None":
        return None
    entries = _literal(out)
    return ([n for n, kind in entries if kind == 0x8000], [n for n, kind in entries if kind == 0x4000])


def _stale(t, bundle: Bundle) -> list[str]:
    """What the new layout does not hold, files before their directories."""
    stale: list[str] = []
    root_files, _ = _listing(t, "") or ([], [])
    stale += [n for n in root_files if n in _OLD_ROOT_APP or n == PENDING_FILE]
    for top in (*SLOTS, APP_DIR):
        listing = _listing(t, top)
        if listing is None:
            continue
        files, dirs = listing
        stale += [f"{top}/{n}" for n in files]
        for d in dirs:
            inner, _ = _listing(t, f"{top}/{d}") or ([], [])
            stale += [f"{top}/{d}/{n}" for n in inner]
            stale.append(f"{top}/{d}")
        stale.append(top)
    keep = bundle.paths | {FIRST_SLOT, f"{FIRST_SLOT}/{APP_DIR}"}
    return [p for p in stale if p not in keep]


def _literal(text: str) -> list[tuple[str, int]]:
    import ast

    try:
        value = ast.literal_eval(text.strip())
        return [(str(name), int(kind)) for name, kind in value]
    except (ValueError, SyntaxError, TypeError):
        raise UploadFailed(f"unexpected listing from the board: {text.strip()[:80]!r}", step="upload") from None
