"""Power loss at any byte of an update leaves a pod that boots a whole build, old or new.

The real boot.py and pod/update.py on the 32-bit interpreter at the pod's
heap budget, over a file-backed filesystem whose power the HAL shim cuts at
a chosen change, mid-write (emulator/powercut.py). bench/update_powercut.py
runs 1000 cuts; this runs the first and last changes and a random sample.
"""
from __future__ import annotations

import random

import pytest

from hypnolum.emulator import powercut

pytestmark = pytest.mark.micropython


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    return powercut.Rig(tmp_path_factory.mktemp("powercut"))


def test_every_cut_boots_a_whole_build_and_the_update_then_completes(rig):
    total = rig.changes(seed=3)
    rng = random.Random(3)
    ks = [1, 2, 3] + list(range(total - 6, total + 1)) + rng.sample(range(4, total - 6), 50)
    out = powercut.Outcome()
    for k in ks:
        rig.trial(k, 3, out)
    assert out.failures == [] and out.bricks == 0
    assert out.cuts == out.recovered == len(ks)
    assert out.old_boots and out.new_boots  # cut before the switch: old; after the host confirmed: new


def test_a_mixed_slot_is_a_brick(rig):
    # the check itself: a slot with one file of the new build in the old is neither
    fs = rig.fresh("mixed")
    new_status = next(f for f in rig.new.slot if f.path == "pod/status.mpy")
    (fs / "a" / "pod" / "status.mpy").write_bytes(new_status.data)
    ok, words, log = rig.boot(fs, "check")
    assert ok, log
    assert rig.whole(fs, words).startswith("slot a is neither build")
