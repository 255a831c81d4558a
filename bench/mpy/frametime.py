"""Per-frame timing of the render path under MicroPython, shared by bench/light_frame.py and bench/pod_cpu.py.

scene(r, spec, eid) puts a Renderer on an effect the way light_frame has always
done (mid-range period, palette, alpha and group inputs set); settle() renders
until slews and buffers are steady; best_of() times frame(t) over `frames`
frames of 17 ms, best of `repeats` runs with the GC off (other processes share
the machine), and reports the bytes allocated per run.
"""
import gc
import time

import hal
from pod import wire

STEP_MS = 17  # ~60 fps
_GC_EVERY = 16384  # bytes a timing run may allocate: what the pod allocates between two collections


def scene(r, spec, eid, transition_ms=0):
    per = min(spec.period[1], max(spec.period[0], 4000)) if spec.period else 0
    r.apply(wire.Scene(eid, 220, (255, 150, 80), transition_ms, per, wire.PALETTE_AURORA, wire.SCENE_FLAG_STROBE_OPT_IN))
    r.inputs.alpha = 150
    r.inputs.group = 40000


def settle(frame, t, n=200):
    for i in range(n):  # settle: slews done, buffers built
        t = hal.ticks_add(t, STEP_MS)
        frame(t)
    return t


def best_of(frame, t, frames, repeats):
    """(t, best us for `frames` frames, bytes allocated per run)."""
    best = 1 << 30
    alloc = 0
    add = hal.ticks_add
    for rep in range(repeats):
        gc.collect()
        gc.disable()
        a0 = gc.mem_alloc()  # locals only from here: a new global would grow the module dict
        t0 = time.ticks_us()
        for i in range(frames):
            t = add(t, STEP_MS)
            frame(t)
        us = time.ticks_diff(time.ticks_us(), t0)
        alloc += gc.mem_alloc() - a0
        gc.enable()
        if us < best:
            best = us
    return t, best, alloc // repeats


def timed(fn, n, reps):
    """(best us per call over reps runs of n calls, bytes allocated per call); GC off while timing,
    so a run allocates at most what the board allocates between two collections (_GC_EVERY):
    with the GC off, each multi-block allocation searches the heap from the first free block
    past every one allocated since the last collection, a cost that grows with the run."""
    gc.collect()
    a0 = gc.mem_alloc()
    fn()
    one = gc.mem_alloc() - a0
    if one > 0:
        gc.collect()
        n = max(5, min(n, gc.mem_free() // 2 // one, _GC_EVERY // one))
    best = 1 << 30
    alloc = 0
    for r in range(reps):
        gc.collect()
        gc.disable()
        a0 = gc.mem_alloc()
        t0 = time.ticks_us()
        for i in range(n):
            fn()
        us = time.ticks_diff(time.ticks_us(), t0)
        alloc = gc.mem_alloc() - a0
        gc.enable()
        if us < best:
            best = us
    return best / n, alloc // n
