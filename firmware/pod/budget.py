"""The firmware's committed heap budget.

The S3's PSRAM heap is megabytes, but the firmware commits to a live set that
fits this budget: a small heap keeps GC pauses short and shows a leak within
minutes. The emulator runs every pod with exactly this heap
(`micropython -X heapsize=HEAP_BUDGET`), and the firmware must keep at least
HEAP_FLOOR free there at its heaviest configuration (docs/emulator.md).
"""
from micropython import const

HEAP_BUDGET = const(262144)  # bytes
HEAP_FLOOR = const(65536)  # 25 % of the budget: mem_free never below this
