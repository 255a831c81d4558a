"""What an emulated pod's heap holds: the census emulator/mpy/heapmap.py prints.

With HYPNOLUM_HEAP_MAP=<seconds> in its environment an emulated pod collects
after that long and prints its block map (micropython.mem_info(1)) and its
dynamic qstrs (micropython.qstr_info(1)) into D/micropython.log. census()
reads them back and summarize() says, in bytes: what is allocated after the
collection, by the type of each object's head block (T tuple, L list, D dict,
S str/bytes, A bytearray/array header, F float, B function, M module, h any
other: buffers, instances, bytecode, qstr pools), the largest objects, and the
qstr pools: the interned names, and how many more fit before MicroPython adds
a pool twice the size of the last (py/qstr.c, qstr_add_ at v1.28.0), a cliff
of several KB for a few names.

    .venv/bin/python bench/pod_heap.py --pods 1 --seconds 45 --census 30 [--ble]
"""
from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from pathlib import Path

_BLOCK = 16  # bytes per GC block (MICROPY_BYTES_PER_GC_BLOCK: 4 words of a 32-bit port)
_LINE = re.compile(r"^([0-9a-f]{8}): (.*)$")
_POOL = re.compile(r"qstr pool: n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), n_total_bytes=(\d+)")
_BEGIN = re.compile(r"\[heapmap\] begin alloc (\d+) free (\d+)")


@dataclass
class Census:
    alloc: int
    free: int
    by_type: dict[str, tuple[int, int]]  # head character -> (bytes, objects)
    largest: list[int]
    qstrs: int = 0
    qstr_pools: int = 0
    qstr_bytes: int = 0
    names: list[str] = field(default_factory=list)


def census(log: Path) -> Census | None:
    """The last census in a pod's micropython.log; None if it printed none."""
    text = log.read_text(errors="replace")
    at = text.rfind("[heapmap] begin")
    if at < 0 or "[heapmap] end" not in text[at:]:
        return None
    body = text[at:text.index("[heapmap] end", at)]
    head = _BEGIN.search(body)
    blocks: list[str] = []
    names = []
    for line in body.splitlines():
        m = _LINE.match(line)
        if m:
            at_block = int(m.group(1), 16) // _BLOCK
            blocks.extend("." * (at_block - len(blocks)))
            blocks.extend(m.group(2))
        elif line.startswith("Q(") and line.endswith(")"):
            names.append(line[2:-1])
    sizes: dict[str, list[int]] = collections.defaultdict(list)
    i = 0
    while i < len(blocks):
        c = blocks[i]
        j = i + 1
        if c not in ".=":
            while j < len(blocks) and blocks[j] == "=":
                j += 1
            sizes[c].append((j - i) * _BLOCK)
        i = j
    pool = _POOL.search(body)
    out = Census(int(head.group(1)), int(head.group(2)),
                 {c: (sum(v), len(v)) for c, v in sorted(sizes.items())},
                 sorted((s for v in sizes.values() for s in v), reverse=True)[:12], names=names)
    if pool:
        out.qstr_pools, out.qstrs, _, out.qstr_bytes = map(int, pool.groups())
    return out


def qstr_capacity(pools: int) -> int:
    """Names the first ``pools`` dynamic pools hold: each new pool has twice the entries of the
    last (py/qstr.c:211-216), and the last built-in one, the frozen modules', counts 10
    (MICROPY_ALLOC_QSTR_ENTRIES_INIT): 20, 40, 80, ..."""
    return sum(20 * 2**k for k in range(pools))


def summarize(pod_id: str, c: Census) -> str:
    kinds = ", ".join(f"{k} {b} B/{n}" for k, (b, n) in c.by_type.items())
    lines = [f"{pod_id}: after a collection {c.alloc} B allocated, {c.free} B free; by head block: {kinds}",
             f"  largest objects: {', '.join(str(s) for s in c.largest)} B"]
    if c.qstr_pools:
        cap = qstr_capacity(c.qstr_pools)
        lines.append(f"  qstrs: {c.qstrs} dynamic names in {c.qstr_pools} pools ({c.qstr_bytes} B); "
                     f"{cap - c.qstrs} more before the next pool of {cap + 20} entries "
                     f"(~{(cap + 20) * 7 // 1024} KB) is allocated; the census's own few names included")
    return "\n".join(lines)
