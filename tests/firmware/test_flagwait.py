# Awaiting a ThreadSafeFlag without a coroutine per wait (pod/flagwait.py).
import gc

import asyncio
from pod.flagwait import Flag


async def _per_wait(flag, wait):
    # bytes allocated per set-then-wait, over 100 (after one to warm up)
    flag.set()
    await wait()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(100):
        flag.set()
        await wait()
    used = gc.mem_alloc() - before
    gc.enable()
    return used / 100


async def test_a_flag_waits_without_a_coroutine_per_wait():
    ours = Flag()
    theirs = asyncio.ThreadSafeFlag()
    assert await _per_wait(ours, ours.wait) == 0  # set already: nothing is parked, nothing made
    assert await _per_wait(theirs, theirs.wait) > 0  # a coroutine per wait (extmod/asyncio/event.py)

    woke = []

    async def waiter():
        await ours.wait()
        woke.append(1)

    task = asyncio.create_task(waiter())
    await asyncio.sleep_ms(5)
    assert woke == []  # parked until set
    ours.set()
    await asyncio.sleep_ms(5)
    assert woke == [1]
    await task
