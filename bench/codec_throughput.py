"""Host and firmware codec throughput for an 8-channel, 40 ms EEG batch.

Prints frames per second decoded by hostd's codec (CPython, construct) and
encoded + decoded by the firmware's generated codec and framing under the real
micropython interpreter, and the wire efficiency of that batch.

    .venv/bin/python bench/codec_throughput.py
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hypnolum.paths import FIRMWARE
from hypnolum.protocol import codec

CHANNELS, SAMPLES = 8, 10  # 40 ms at 250 Hz
FIELDS = dict(first_seq=123456, ticks_ms=1 << 29, channels=CHANNELS, flags=0, samples=bytes(range(256))[: 3 * CHANNELS * SAMPLES])


def host() -> None:
    frame = codec.encode("eeg_batch", 1, FIELDS)
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        codec.decode(frame)
    dt = time.perf_counter() - t0
    payload = 3 * CHANNELS * SAMPLES
    print(f"host decode: {n / dt:,.0f} frames/s ({dt / n * 1e6:.1f} us/frame)")
    print(f"wire efficiency 8ch x 10 samples: {payload}/{len(frame)} bytes = {payload / len(frame):.1%}")




def firmware() -> None:
    mpy = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which("micropython")
    script = Path(__file__).with_name("codec_throughput_mpy.py")
    env = dict(os.environ, MICROPYPATH=f"{FIRMWARE}:{FIRMWARE.parent / 'tests' / 'firmware'}:.frozen")
    out = subprocess.run([mpy, str(script)], env=env, capture_output=True, text=True, timeout=120)
    print(out.stdout.strip() or out.stderr.strip())


if __name__ == "__main__":
    host()
    firmware()
