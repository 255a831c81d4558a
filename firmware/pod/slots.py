"""The pod's A/B slots as the app sees them at boot (docs/update.md).

boot.py picks the slot from slots.json before anything else runs; here the
app reads what it needs of that state (a build on trial, safe mode for
updates, a rollback this boot, the boot-loop count), counts the boot as
running once it has run RUNNING_MS, and rolls a build on trial back when the
host has not confirmed it in time (supervise). The host's confirmation is
confirm(). Small on purpose: the update store (pod/update.py, Store, built on
Slots) takes ~32 KB of heap once imported, so it is imported only when an
update begins (Slots.store()).
"""
import asyncio
import json

import hal
from micropython import const

# wire layout (values generated from protocol/messages.py by `make codec`)
OK = const(0)  # update_reason.ok
E_STATE = const(5)  # update_reason.state: not now: no update begun, a build on trial, nothing to confirm, no slots
E_IO = const(10)  # update_reason.io: the filesystem refused
# end of wire layout
STATE = "slots.json"
SLOTS = ("a", "b")
RUNNING_MS = const(20000)  # up this long: the boot counts as running (boot-loop detection)
TRIAL_MS = const(30000)  # default time for the host to confirm a new build
_TICK_MS = const(500)


def other(slot):
    return "b" if slot == "a" else "a"


def read_state():
    """slots.json as a dict, or None: no slots (firmware run from the repository) or unreadable."""
    data = hal.read_file(STATE)
    if data is None:
        return None
    try:
        st = json.loads(data)
    except ValueError:
        return None
    return st if isinstance(st, dict) and st.get("active") in SLOTS else None


def write_state(st):
    hal.write_file(STATE, json.dumps(st))


class Slots:
    """The slots' state as of this boot (slots.json); None-like when the pod has no
    slots (firmware run from the repository)."""

    def __init__(self):
        self.state = read_state()
        st = self.state or {}
        self.active = st.get("active")  # None: no slots
        self.trial = bool(st.get("trial"))  # this build awaits the host's confirmation
        self.safe = bool(st.get("safe"))  # safe mode for updates: only the link and the store run
        self.rolled_back = bool(st.get("back"))  # this boot rolled a build on trial back
        self.failed_boots = max(0, st.get("fails", 1) - 1)  # boots before this one that did not reach running
        self._store = None

    def store(self):
        """The update store (pod/update.py), made on first use: its code is imported then."""
        if self._store is None:
            from pod import update

            self._store = update.Store(update.load_key())
        return self._store

    def confirm(self):
        """The host confirmed the build on trial: it stays."""
        if not self.trial:
            return E_STATE
        st = dict(self.state)
        st["trial"] = 0
        st["tried"] = 0
        try:
            write_state(st)
        except OSError:
            return E_IO
        self.state = st
        self.trial = False
        return OK

    # ------------------------------------------------------------ running, rollback
    def _running(self):
        # up RUNNING_MS: this boot is no boot-loop boot
        st = read_state()
        if st is not None and st.get("fails"):
            st["fails"] = 0
            write_state(st)
            if self.state is not None:
                self.state["fails"] = 0

    async def supervise(self, on_rollback=None):
        """Count this boot as running after RUNNING_MS; with a build on trial that the host
        has not confirmed within its time (slots.json "wait", TRIAL_MS by default), call
        on_rollback() and reset: boot.py then boots the previous slot."""
        if self.state is None:
            return
        start = hal.ticks_ms()
        wait = self.state.get("wait", TRIAL_MS)
        running = False
        while True:
            await asyncio.sleep_ms(_TICK_MS)
            age = hal.ticks_diff(hal.ticks_ms(), start)
            if not running and age >= RUNNING_MS:
                running = True
                self._running()
            if self.trial and age >= wait:
                if on_rollback is not None:
                    on_rollback()
                await asyncio.sleep_ms(200)  # let a LOG leave
                hal.reset()
            if running and not self.trial:
                return
