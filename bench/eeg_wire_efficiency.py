"""EEG wire efficiency, measured on the pty of an emulated pod running the real firmware.

For 8 channels at 250 Hz and 16 channels at 125 Hz (Cyton + Daisy) this
starts one emulated pod, reads its port raw for --seconds, splits the bytes
at the frame delimiter (0x00), decodes every frame and prints:

* EEG stream efficiency: sample bytes (3 per channel per sample) / wire bytes
  of the eeg_batch frames that carry them (COBS, delimiter, header, CRC,
  fixed fields included) — the figure to compare with the Cyton's own
  33-byte packet, 24 sample bytes of 33 (72.7 %);
* batching latency: the time span of the largest batch (samples / rate);
* the whole link: sample bytes / every byte on the wire (band powers at
  4 Hz and the 1 Hz status included), for the record.

    .venv/bin/python bench/eeg_wire_efficiency.py [--seconds 10] [--batch-ms 12]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import tty
from collections import Counter

from hypnolum.emulator.runner import Emulator
from hypnolum.protocol import codec

CYTON = 24 / 33


async def measure(channels: int, seconds: float, batch_ms: int | None = None) -> dict:
    rate = 125 if channels == 16 else 250
    with tempfile.TemporaryDirectory(prefix="hypnolum-wire-") as d:
        async with Emulator(1, d, seed=1, eeg_channels=channels, eeg_batch_ms=batch_ms) as emu:
            await emu.wait_links(15)
            pod = emu.pods[0]
            fd = os.open(pod.tty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            tty.setraw(fd)
            loop = asyncio.get_running_loop()
            buf = bytearray()
            got = asyncio.Event()

            def on_read():
                try:
                    buf.extend(os.read(fd, 65536))
                except BlockingIOError:
                    return
                got.set()

            loop.add_reader(fd, on_read)
            try:
                await asyncio.sleep(3.0)  # the headset handshake, the first full band window
                buf.clear()
                t0 = time.monotonic()
                await asyncio.sleep(seconds)
                elapsed = time.monotonic() - t0
                data = bytes(buf)
            finally:
                loop.remove_reader(fd)
                os.close(fd)
    chunks = data.split(b"\x00")[1:-1]  # the first and last may be cut
    wire = Counter()
    frames = Counter()
    sample_bytes = 0
    max_batch = 0
    for chunk in chunks:
        dec = codec.FrameDecoder()
        fr = dec.feed(chunk + b"\x00")
        if not fr:
            wire["undecodable"] += len(chunk) + 1
            continue
        f = fr[0]
        wire[f.name] += len(chunk) + 1
        frames[f.name] += 1
        if f.name == "eeg_batch":
            sample_bytes += len(f.fields["samples"])
            max_batch = max(max_batch, len(f.fields["samples"]) // (3 * f.fields["channels"]))
    total = sum(wire.values())
    return {
        "channels": channels, "rate": rate, "seconds": elapsed, "sample_bytes": sample_bytes,
        "eeg_wire": wire["eeg_batch"], "total_wire": total, "frames": dict(frames),
        "samples_per_s": sample_bytes / (3 * channels) / elapsed, "latency_ms": max_batch * 1000 / rate,
    }


async def main(seconds: float, batch_ms: int | None) -> None:
    for channels in (8, 16):
        r = await measure(channels, seconds, batch_ms)
        eff = r["sample_bytes"] / r["eeg_wire"]
        whole = r["sample_bytes"] / r["total_wire"]
        print(
            f"{channels:2d} ch @ {r['rate']} Hz: EEG stream efficiency {eff:.1%} "
            f"({r['sample_bytes']} sample bytes / {r['eeg_wire']} eeg_batch wire bytes), "
            f"batching latency {r['latency_ms']:.0f} ms, {r['samples_per_s']:.1f} samples/s; "
            f"whole link {whole:.1%} incl. {r['frames'].get('eeg_bands', 0)} eeg_bands and "
            f"{r['frames'].get('status', 0)} status frames in {r['seconds']:.1f} s; Cyton packet {CYTON:.1%}"
        )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring time per configuration (default 10)")
    ap.add_argument("--batch-ms", type=int, default=None,
                    help="pod.json eeg_batch_ms (default: the firmware's, 40; circle pods use 12)")
    args = ap.parse_args()
    asyncio.run(main(args.seconds, args.batch_ms))
