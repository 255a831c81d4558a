"""Power cut at a random byte of an update, over and over: does the pod always boot a whole build?

Each cut: a pod's filesystem as the flash tool leaves it (the old build in
slot a), then the real firmware on the 32-bit MicroPython interpreter boots,
takes an update (every chunk, shuffled, some twice), commits, boots again and
confirms, and the power goes at a random one of those filesystem changes,
mid-write for a write (emulator/powercut.py, HYPNOLUM_POWER_CUT in
emulator/mpy/hal.py). The next boot must run a slot that is one build, whole:
the old or the new, byte for byte, with the firmware's own build hash;
anything else is a brick. The pod then resumes the update and must end on
the new build, confirmed.

    .venv/bin/python bench/update_powercut.py [--cuts 1000] [--seed 1]

Prints cuts, bricks, how many booted the old and the new build, and how many
recovered; exits 1 on any brick or failed recovery.
"""
from __future__ import annotations

import argparse
import sys
import time

from hypnolum.emulator import powercut


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cuts", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    t0 = time.monotonic()
    out = powercut.run(args.cuts, args.seed)
    print(f"cuts: {out.cuts}  bricks: {out.bricks}  booted old: {out.old_boots}  booted new: {out.new_boots}  "
          f"recovered: {out.recovered}  ({time.monotonic() - t0:.0f} s)")
    for f in out.failures[:10]:
        print(f, file=sys.stderr)
    return 0 if not out.failures and out.bricks == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
