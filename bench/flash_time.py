"""Bytes on the wire to flash and provision one pod, and the time that implies at 921600 baud.

Runs the tool's real steps against an emulated board and counts the bytes
the board's port carried in each direction:

* image: esptool (ROM loader, compressed write, MD5 verify), the image at 0x1000;
* app + config: mpremote's raw REPL upload of firmware/ compiled for the
  ESP32 (``-march=xtensawin``, the tool's default) and pod.json.

Wire time = bytes x 10 bits (8N1) / 921600 baud, per direction; the link is
full duplex, so a step takes at least the larger of its two directions.
Not modelled: the ESP32's flash erase/program time and command round-trip
latency of a real USB-UART (both add to the figure on hardware).

Without --image the image is a stand-in: 1.7 MB (the size of MicroPython's
ESP32_GENERIC images) of the MicroPython interpreter's own x86-64 machine
code from the installed wheel, so deflate sees code, not random bytes. Pass
a real MicroPython .bin with --image for the exact figure.

    python bench/flash_time.py [--image micropython.bin]
"""
from __future__ import annotations

import argparse
import asyncio
import glob
import sys
import tempfile
import time
from pathlib import Path

from hypnolum import paths
from hypnolum.emulator import esp_rom
from hypnolum.emulator.board import EmulatedBoard
from hypnolum.flash import bundle, provision, upload
from hypnolum.flash.image import flash_image, load_image

BAUD = 921600
TARGET_S = 25.0
STAND_IN_SIZE = 1_700_000


def _stand_in(path: Path) -> Path:
    so = glob.glob(str(Path(sys.executable).parent.parent / "lib" / "python3*" / "site-packages" / "micropython_run*.so"))
    code = Path(so[0]).read_bytes()[:STAND_IN_SIZE] if so else bytes(STAND_IN_SIZE)
    path.write_bytes(esp_rom.make_image(0, payload=code))
    return path


def wire_s(n: int) -> float:
    return n * 10 / BAUD


async def measure(image_path: Path, workdir: Path) -> dict:
    image = load_image(image_path)
    app = bundle.build(paths.FIRMWARE, "xtensawin")
    board = EmulatedBoard("bench", workdir)
    await board.start(download=True)
    try:
        t0 = time.monotonic()
        await asyncio.to_thread(flash_image, str(board.port), image, baud=BAUD, before="no-reset",
                                after="soft-reset", stub=False)
        t_image = time.monotonic() - t0
        await board.wait_mode("repl")
        cfg = provision.make({"pod_id": "pod-bench"})
        t0 = time.monotonic()
        await asyncio.to_thread(upload.upload, str(board.port), app, lambda mac: cfg.pod_json(), reset=False)
        t_upload = time.monotonic() - t0
        c = board.counters
        return {
            "image_bytes": len(image.data),
            "app_bytes": app.size,
            "app_files": len(app.files),
            "config_bytes": len(cfg.pod_json()),
            "image_out": c.host_bytes.get("download", 0),
            "image_in": c.board_bytes.get("download", 0),
            "app_out": c.host_bytes.get("repl", 0),
            "app_in": c.board_bytes.get("repl", 0),
            "local_image_s": t_image,
            "local_upload_s": t_upload,
        }
    finally:
        await board.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, help="a real MicroPython ESP32 .bin (default: a stand-in)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hypnolum-bench-") as tmp:
        image = args.image or _stand_in(Path(tmp) / "stand-in.bin")
        r = asyncio.run(measure(image, Path(tmp)))
    image_s = wire_s(max(r["image_out"], r["image_in"]))
    app_s = wire_s(max(r["app_out"], r["app_in"]))
    total = image_s + app_s
    print(f"image: {r['image_bytes']} bytes{' (stand-in)' if args.image is None else ''}")
    print(f"  host->board {r['image_out']} bytes, board->host {r['image_in']} bytes "
          f"({r['image_out'] / r['image_bytes']:.2f} of the image after deflate + SLIP): {image_s:.2f} s at {BAUD}")
    print(f"app + config: {r['app_files']} files, {r['app_bytes']} bytes (xtensawin .mpy) + {r['config_bytes']} "
          f"bytes pod.json")
    print(f"  host->board {r['app_out']} bytes, board->host {r['app_in']} bytes "
          f"({r['app_out'] / (r['app_bytes'] + r['config_bytes']):.2f} x the files, base64 + raw REPL): "
          f"{app_s:.2f} s at {BAUD}")
    print(f"per board: {r['image_out'] + r['app_out']} bytes sent, {total:.2f} s of wire time at {BAUD} baud "
          f"(target <= {TARGET_S:.0f} s: {'met' if total <= TARGET_S else 'MISSED'})")
    print(f"(on this machine's ptys: image step {r['local_image_s']:.2f} s, upload {r['local_upload_s']:.2f} s)")
    return 0 if total <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
