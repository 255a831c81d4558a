"""What the pod's light reports add to its CPU use on the ESP32-S3 (the LED preview, the scene report).

    .venv/bin/python bench/led_preview.py

Times, under the 32-bit v1.28.0 unix port with the firmware as the emulator
compiles it (bench/mpy/preview_paths.py): one LED preview (300 LEDs averaged
to 32 segments, packed, framed and handed to the firmware's usbcdc.Port), one
scene report (sent only when what the pod shows changes), and the
governor's frame with and without a stop's fast fade, every LED moving. Scaled to the S3 by bench/pod_cpu.py's CoreMark factor; the
preview runs LED_PREVIEW_MS apart (5 a second). The pod's total without it is
bench/pod_cpu.py's figure; together they must stay under 50 %.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pod_cpu import FACTOR, PSRAM_PENALTY, run_mpy  # noqa: E402

from hypnolum.protocol.messages import LED_PREVIEW_MS  # noqa: E402


def main() -> int:
    from hypnolum.emulator import image

    mpath = image.build() + [str(ROOT / "bench" / "mpy"), ".frozen"]
    with tempfile.TemporaryDirectory(prefix="led-preview-") as tmp:
        res, info = run_mpy([], mpath, tmp, ROOT / "bench" / "mpy" / "preview_paths.py")
    per_s = 1000 / LED_PREVIEW_MS
    print(f"scale: x{FACTOR:.1f} to the ESP32-S3 (bench/pod_cpu.py); PSRAM column x{PSRAM_PENALTY}")
    print(f"{'path':<34}{'us here':>9}{'us S3':>9}{'B alloc':>8}{'per s':>7}{'CPU S3':>9}{'PSRAM':>8}")
    for key, rate in (("preview_send", per_s), ("scene_report", 0.0), ("govern_slew", 60.0),
                      ("govern_stop_fade", 60.0)):
        us, alloc, _ = res[key]
        share = us * FACTOR * rate / 1e6
        print(f"{key:<34}{us:9.2f}{us * FACTOR:9.0f}{alloc:8d}{rate:7.1f}{share:9.2%}{share * PSRAM_PENALTY:8.2%}")
    print(f"preview frames sent {info.get('preview_sent')}, dropped {info.get('spare_dropped')}")
    print("scene_report: once per change of what is shown (not per frame); its params list is packed by wire.py")
    bad = [k for k in ("preview_send", "govern_slew", "govern_stop_fade") if res[k][1]]
    if bad:
        print("allocates per call:", bad)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
