# Emulator-only heap census (bench/heap_census.py): with HYPNOLUM_HEAP_MAP=<seconds>, the pod
# collects after that many seconds of running and prints its heap's block map
# (micropython.mem_info(1): one character per 16-byte block, the head block naming the
# object's type) and its dynamic qstrs (micropython.qstr_info(1)) between "[heapmap] begin" and
# "[heapmap] end" in D/micropython.log; then, HYPNOLUM_HEAP_FRESH_MS later and without
# collecting, the block map again between "[heapmap] fresh" and "[heapmap] end": what the
# pod allocated meanwhile (garbage and new objects). Imported by launch.py only when asked: it
# costs no heap otherwise.
import asyncio
import gc
import micropython
import os

_run = asyncio.run


async def _census(after_s, fresh_ms):
    await asyncio.sleep(after_s)
    gc.collect()
    print("[heapmap] begin alloc", gc.mem_alloc(), "free", gc.mem_free())
    micropython.mem_info(1)
    micropython.qstr_info(1)
    print("[heapmap] end")
    if os.getenv("HYPNOLUM_HEAP_WAITS"):
        from asyncio import core
        counts = {}
        q = core._io_queue
        orig = q.queue_read

        def counted(s):
            c = str(core.cur_task.coro)
            k = str(type(s)) + " " + c[:c.find(" at ")]
            counts[k] = counts.get(k, 0) + 1
            orig(s)

        q.queue_read = counted
        await asyncio.sleep(5)
        q.queue_read = orig
        print("[heapmap] waits in 5 s", counts)
    if fresh_ms:
        a = gc.mem_alloc()
        await asyncio.sleep_ms(fresh_ms)
        print("[heapmap] fresh alloc", gc.mem_alloc(), "was", a)
        micropython.mem_info(1)
        print("[heapmap] end")


def _run_with_census(main):
    async def both():
        asyncio.create_task(_census(float(os.getenv("HYPNOLUM_HEAP_MAP")), int(os.getenv("HYPNOLUM_HEAP_FRESH_MS") or 0)))
        await main

    return _run(both())


asyncio.run = _run_with_census
