"""boot.py's slot choice on the real interpreter: rollback of a build on trial, boot-loop safe modes.

Each boot is a fresh 32-bit interpreter running the real boot.py over a pod
filesystem laid out as the flash tool leaves it (emulator/powercut.py's rig).
"""
from __future__ import annotations

import json

import pytest

from hypnolum.emulator import powercut

pytestmark = pytest.mark.micropython


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    return powercut.Rig(tmp_path_factory.mktemp("boot"))


def _state(fs):
    return json.loads((fs / "slots.json").read_text())


def test_a_build_on_trial_gets_one_boot(rig):
    fs = rig.fresh("trial")
    ok, words, log = rig.boot(fs, "update")
    assert ok, log
    assert _state(fs)["trial"] == 1 and words[0] == "a"  # committed; still running a until the reset
    ok, words, log = rig.boot(fs, "check")  # the reset after the commit: the new build, on trial
    assert ok, log
    assert words[0] == "b" and rig.whole(fs, words) == "new" and words[5] == "0"
    ok, words, log = rig.boot(fs, "check")  # reset again, not confirmed: back to the old build
    assert ok, log
    assert words[0] == "a" and rig.whole(fs, words) == "old" and words[5] == "1"  # rolled_back
    assert _state(fs)["trial"] == 0
    ok, words, log = rig.boot(fs, "check")
    assert words[0] == "a" and words[5] == "0"


def test_boots_that_never_run_end_in_safe_mode_for_updates_then_the_repl(rig):
    fs = rig.fresh("loop")
    seen = []
    for _ in range(8):
        ok, words, log = rig.boot(fs, "check")  # a boot that never runs RUNNING_MS
        assert ok, log
        seen.append((words[3], words[4]))  # (safe mode for updates, the REPL's safe mode)
    assert seen == [("0", "0")] * 3 + [("1", "0")] * 3 + [("0", "1")] + [("0", "0")]

