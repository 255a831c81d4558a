"""Predicted CPU use of the pod on the ESP32-S3 at 240 MHz, heaviest configuration.

    .venv/bin/python bench/pod_cpu.py [--quick]

What it predicts: the share of the MicroPython interpreter's time (one task,
pinned to core 1, docs/board-port.md) that the pod's work takes, for 300 LEDs
at 60 fps (WS2812 and APA102/SK9822, both on SPI with DMA) with a Cyton at
8 ch x 250 Hz or with its Daisy at 16 ch x 125 Hz, in a circle: PING every
20 ms, GROUP_VALUE up to 50/s, FRAME_PHASE every 0.5 s, a SCENE_AT every 3 s,
EEG batched every 12 ms (eeg_batch_ms of circle pods). Target: <= 50 %.

Method:
1. Every hot path is timed here (min of N runs, GC off while timing) on the
   32-bit v1.28.0 unix port (.venv/bin/micropython) running the real firmware
   modules compiled as the emulator compiles them (hypnolum.emulator.image:
   mpy-cross -march=x86) with the emulator's HAL shim, wired as
   firmware/pod/app.py wires them (bench/mpy/pod_cpu_paths.py). The link's
   port is the firmware's own pod/usbcdc.Port over a stand-in USBDevice that
   counts bytes and completes transfers through micropython.schedule.
   Frames use bench/mpy/frametime.py, shared with bench/light_frame.py, but
   time Renderer.compute + ledwire.encode (+ ledwire.spread_onewire for
   WS2812: what firmware/hal.py Leds does before handing the frame over), not
   the shim's Leds.write.
2. The LED transfer itself costs the interpreter nothing: firmware/hal.py Leds
   sends it on SPI with DMA from a writer thread that waits with the GIL
   released (docs/board-port.md "LED output"), and show_at returns at once: a
   one-shot timer's scheduled callback hands the frame to the writer at its
   instant. That callback (micropython.schedule + a lock release) is timed
   here and counted once a frame.
3. Interpreter time is scaled by CoreMark: ESP32-S3 613.86 single core at
   240 MHz / this machine's single-core CoreMark (constants below).

Caveats:
- CoreMark is compiled C; the interpreter is compiled C too, but viper/native
  code is emitted by MicroPython's own x86 and Xtensa emitters, whose code
  quality differs from gcc's; the ratio is an estimate, maybe +-30 %.
- PSRAM: on the N16R8 the heap (objects, and .mpy bytecode, which is copied
  into the heap: board-port.md section 7, "Code from .mpy files") lives in
  octal PSRAM behind the data cache, while CoreMark's small working set fits
  in cache or internal SRAM. A cache miss costs far more than on x86. The live heap (~150 KB in this bench) exceeds the S3's data cache
  (32 or 64 KB, configurable), so the "PSRAM" column multiplies interpreter time by
  PSRAM_PENALTY = 1.5: an assumed pessimistic bound, not a measurement (the
  viper kernels stream through bytearrays, which the cache handles well; the
  bytecode interpreter's pointer chasing does not). Measure on a board.
- The timed paths use the board's C ticks_* builtins (bench/mpy/pod_cpu_paths.py),
  but the emulator's derate sensors are a file read (board: ADC and 1-Wire C
  calls), which overstates a little. gc.mem_free() (STATUS) walks the heap's allocation
  table, longer on a multi-MB PSRAM heap.
- asyncio's per-wakeup cost is timed without the emulator's tick-model
  poller, with a count of wakeups per second that is an estimate (render 1 a
  frame, one per received USB packet, bands slices, and the 100 Hz tick, at
  each of which the headset task reads the UART: pod/cyton.py polls it).
- Not counted: the LED writer thread's few bytecodes a frame and its GIL
  hand-over; ISRs and the other FreeRTOS tasks (TinyUSB, UART driver).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# -- the x86 -> Xtensa LX7 factor ------------------------------------------------------
# Espressif: ESP32-S3, 613.86 CoreMark single core at 240 MHz (2.56 CoreMark/MHz), from
# the ESP32-S3 datasheet (section "CPU and Memory") / Espressif's ESP32-S3 product page.
S3_COREMARK = 613.86
# This machine, measured 2026-12-05 (UTC) on "AMD EPYC" (lscpu model name), load average
# < 0.5, best of 3: eembc/coremark HEAD (github), `make PORT_DIR=linux ITERATIONS=0 link`
# (gcc 12.2.0, -O2, 64-bit), run `./coremark.exe 0x0 0x0 0x66 400000 7 1 2000`: 400000
# iterations, 11.87 s, 33698.40 iterations/s (runs: 33698.40, 33599.33, 33557.05).
# The same built -m32 (the interpreter is 32-bit): 32281.49, i.e. 4 % slower: the 64-bit
# figure is used (slightly pessimistic for the prediction).
HOST_COREMARK = 33698.40
FACTOR = HOST_COREMARK / S3_COREMARK  # one us here ~ FACTOR us on the S3's interpreter
PSRAM_PENALTY = 1.5  # pessimistic column: interpreter time x this (see the docstring)

TARGET = 0.50
WS2812_US_PER_LED = 30.0  # board-port.md section 3: 24 bits x 1.25 us
LEDS = 300
FPS = 60
SPI_BAUD_RE = re.compile(r"^_LED_SPI_BAUD = const\((\d+)\)", re.M)

# circle traffic and the pod's work per second
PINGS = 50.0  # every 20 ms
GROUP_VALUES = 50.0
FRAME_PHASES = 2.0  # every 0.5 s
SCENE_ATS = 1 / 3.0  # every 3 s
BAND_UPDATES = 4.0  # every 250 ms (bands.UPDATE_MS)
STATUSES = 1.0
DERATES = 4.0  # derate._PASS_MS = 250
GC_EVERY_RE = re.compile(r"^_GC_EVERY_MS = const\((\d+)\)", re.M)  # the render loop's collections
TICKS = 100.0  # every 10 ms tick ends asyncio's wait (board-port.md section 1) and the headset task reads the UART

ASYNCIO_SCRIPT = r"""
import asyncio, time, gc
N = %d
TASKS = 8
count = [0]
async def spin():
    while count[0] < N:
        count[0] += 1
        await asyncio.sleep_ms(0)
async def main():
    await asyncio.gather(*[spin() for i in range(TASKS)])
best = 1 << 30
for rep in range(5):
    count[0] = 0
    gc.collect()
    t0 = time.ticks_us()
    asyncio.run(main())
    best = min(best, time.ticks_diff(time.ticks_us(), t0))
print("R asyncio_wakeup %%.3f 0" %% (best / N))

# the LED timer's callback (firmware/hal.py Leds._fire): scheduled, run at the next
# branch, a ticks check and the lock release that hands the frame to the writer
import micropython, _thread
lock = _thread.allocate_lock()
state = [0, 0]
def fire(_):
    if time.ticks_diff(time.ticks_us(), state[0]) > 100:
        state[1] += 1
    lock.release()
best = 1 << 30
for rep in range(5):
    t0 = time.ticks_us()
    for i in range(N):
        lock.acquire()
        micropython.schedule(fire, 0)
        while lock.locked():
            pass
    best = min(best, time.ticks_diff(time.ticks_us(), t0))
print("R led_timer_callback %%.3f 0" %% (best / N))
"""


def spi_baud() -> int:
    m = SPI_BAUD_RE.search((ROOT / "firmware" / "hal.py").read_text())
    if m is None:
        raise SystemExit("firmware/hal.py: no _LED_SPI_BAUD = const(N)")
    return int(m.group(1))


def gc_every_ms() -> int:
    m = GC_EVERY_RE.search((ROOT / "firmware" / "pod" / "render.py").read_text())
    if m is None:
        raise SystemExit("firmware/pod/render.py: no _GC_EVERY_MS = const(N)")
    return int(m.group(1))


def run_mpy(args: list[str], micropypath: list[str], tmp: str, script: Path) -> tuple[dict, dict]:
    exe = ROOT / ".venv" / "bin" / "micropython"
    from hypnolum.emulator.pod import interpreter_env

    env = interpreter_env(dict(os.environ, MICROPYPATH=os.pathsep.join(micropypath), HYPNOLUM_POD_DIR=tmp))
    heap = "262144"  # firmware/pod/budget.py HEAP_BUDGET: the heap the emulator gives every pod
    p = subprocess.run([str(exe), "-X", f"heapsize={heap}", str(script), *args], env=env, cwd=tmp,
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"micropython {script.name} {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    res, info = {}, {}
    for line in p.stdout.splitlines():
        f = line.split()
        if f and f[0] == "R":
            res[f[1]] = (float(f[2]), int(f[3]), " ".join(f[4:]))
        elif f and f[0] == "I":
            for k, v in zip(f[1::2], f[2::2]):
                info[k] = int(v)
    return res, info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (noisier)")
    args = ap.parse_args()
    from hypnolum.emulator import image

    mpath = image.build() + [str(ROOT / "bench" / "mpy"), str(ROOT / "tests" / "firmware"), ".frozen"]
    script = ROOT / "bench" / "mpy" / "pod_cpu_paths.py"
    q = "1" if args.quick else "0"
    with tempfile.TemporaryDirectory(prefix="pod-cpu-") as tmp:
        r8, i8 = run_mpy(["8", "250", "12", q, "1"], mpath, tmp, script)
        r16, i16 = run_mpy(["16", "125", "12", q, "0"], mpath, tmp, script)
        a = Path(tmp) / "asyncio_bench.py"
        a.write_text(ASYNCIO_SCRIPT % (2000 if args.quick else 20000))
        ra, _ = run_mpy([], [".frozen"], tmp, a)
    baud = spi_baud()
    gc_every = gc_every_ms()

    def frame_rows(kind: str) -> tuple[float, float, str, float, str]:
        fx = {k[len(f"frame_{kind}_"):]: v[0] for k, v in r8.items() if k.startswith(f"frame_{kind}_")}
        xf = {k[len(f"xfade_{kind}_"):]: v[0] for k, v in r8.items() if k.startswith(f"xfade_{kind}_")}
        mean = sum(fx.values()) / len(fx)
        worst = max(fx, key=fx.get)
        wx = max(xf, key=xf.get)
        return mean, fx[worst], worst, xf[wx], wx

    print(f"Pod CPU on the ESP32-S3 at 240 MHz: {LEDS} LEDs at {FPS} fps, circle traffic, eeg_batch_ms 12")
    print(f"scale: x{FACTOR:.1f} (CoreMark {HOST_COREMARK:.0f} here / {S3_COREMARK} ESP32-S3); "
          f"PSRAM column x{PSRAM_PENALTY} more")
    print()
    hdr = f"{'path':<46}{'us here':>9}{'us S3':>9}{'B alloc':>8}{'per s':>8}{'ms/s S3':>9}"
    line = "-" * len(hdr)

    def row(name, us_here, alloc, per_s, note=""):
        us_s3 = us_here * FACTOR
        print(f"{name:<46}{us_here:9.2f}{us_s3:9.0f}{alloc:8d}{per_s:8.1f}{us_s3 * per_s / 1000:9.1f}  {note}")
        return us_here * per_s, alloc * per_s  # us here per s, bytes per s

    configs = {}
    for kind in ("ws2812", "apa102"):
        wire_bytes = i8[f"wire_bytes_{kind}"]
        # every LED type goes out on SPI with DMA from the writer thread, which waits with
        # the GIL released (machine_hw_spi.c:378-392): no interpreter time; show_at returns
        # at once and the LED timer's callback hands the frame over (a row below)
        wire_us = (WS2812_US_PER_LED * LEDS if kind == "ws2812" else wire_bytes * 8 * 1e6 / baud)
        mean, worst_us, worst, xf_us, xf = frame_rows(kind)
        for ch, res, info in (("8ch250", r8, i8), ("16ch125", r16, i16)):
            rate = 250 if ch == "8ch250" else 125
            bs = info["batch_samples"]
            batches = rate / bs
            print(line)
            print(f"{kind} + {ch}")
            print(hdr)
            alloc_s = 0.0
            worst_frame = max(worst_us, xf_us)
            h, al = row(f"frame, effect mix (mean of {len([k for k in r8 if k.startswith('frame_' + kind)])} effects)",
                        mean, 0, FPS, "typical: not summed")
            h, al = row(f"frame, worst: {worst if worst_us >= xf_us else 'crossfade ' + xf}", worst_frame, 0, FPS,
                        f"effect + governor + {kind} encode")
            here = h
            rows = [
                (f"Cyton packet: parse + alpha tap ({ch})", "packet_parse_tap", 250.0, ""),
                (f"EEG batch ({bs} samples): ring + pack + send", "eeg_batch", batches, f"{info['eeg_batch_wire_bytes']} B"),
                (f"band powers ({'8' if rate == 250 else '16'} ch) + EEG_BANDS", "band_powers", BAND_UPDATES, ""),
                ("STATUS", "status", STATUSES, ""),
                ("derate pass", "derate_update", DERATES, ""),
                ("rx PING -> PONG", "rx_ping", PINGS, ""),
                ("rx GROUP_VALUE", "rx_group_value", GROUP_VALUES, ""),
                ("rx FRAME_PHASE", "rx_frame_phase", FRAME_PHASES, ""),
                ("rx SCENE_AT -> ACK", "rx_scene_at", SCENE_ATS, ""),
                ("SCENE_AT applied at its frame", "scene_switch", SCENE_ATS, ""),
            ]
            for name, key, per_s, note in rows:
                us, alloc, _ = res[key]
                h, al = row(name, us, alloc, per_s, note)
                here += h
                alloc_s += al
            h, _ = row("LED timer callback (scheduled)", ra["led_timer_callback"][0], 0, FPS,
                       f"the wire ({wire_us:.0f} us a frame) runs on DMA from the LED thread")
            here += h
            wakeups = FPS + TICKS + PINGS + GROUP_VALUES + FRAME_PHASES + SCENE_ATS \
                + BAND_UPDATES * (1 + (8 if rate == 250 else 16)) + STATUSES + DERATES
            h, _ = row("asyncio wakeup (8 tasks, no HAL tick model)", ra["asyncio_wakeup"][0], 0, wakeups, "estimated count")
            here += h
            # the render loop collects every _GC_EVERY_MS whatever was allocated (the heap's own
            # threshold is off: firmware/pod/render.py); one collection, with this live set, timed
            collections = 1000 / gc_every
            h, _ = row(f"GC: {collections:g} collections a second", info["gc_collect_us"], 0, collections,
                       f"{alloc_s / 1000:.1f} KB/s allocated; live set {info['mem_alloc'] // 1024} KB")
            here += h
            chain = res["headset_chain_check"][0]
            parts = res["packet_parse_tap"][0] + res["eeg_batch"][0] / (2 * bs if rate == 125 else bs)
            print(f"  (cross-check: the headset's whole chain, fed 2 packets a read, {chain:.2f} us/packet here; "
                  f"the rows above give {parts:.2f})")
            total = here * FACTOR / 1e6  # share of a second
            total_p = total * PSRAM_PENALTY
            typ = (here - worst_frame * FPS + mean * FPS) * FACTOR / 1e6
            configs[(kind, ch)] = (total, total_p, typ)
    print(line)
    print()
    print(f"{'configuration':<18}{'total':>9}{'PSRAM x1.5':>12}{'effect mix':>12}   target <= 50 %")
    bad = 0
    for (kind, ch), (total, total_p, typ) in configs.items():
        ok = total <= TARGET
        okp = total_p <= TARGET
        bad += not ok
        print(f"{kind + ' ' + ch:<18}{total:9.1%}{total_p:12.1%}{typ:12.1%}   "
              f"{'pass' if ok else 'FAIL'} (PSRAM: {'pass' if okp else 'FAIL'})")
    print()
    print("total = worst frame every frame + all rows + asyncio + GC, scaled; "
          "'effect mix' uses the mean effect instead of the worst.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
