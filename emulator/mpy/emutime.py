"""The board's timing, modelled for the emulator's HAL shim (emulator/mpy/hal.py).

docs/emulator.md "Timing model" says what this models and what it does not;
docs/board-port.md gives the board facts with their sources. In short:

- The pod clock: ticks_us/ticks_ms wrap at 2**30, start where the emulator says
  and run HYPNOLUM_CLOCK_PPM fast or slow. They accumulate steps of the host's
  clock (which wraps at 2**30 us itself on the 32-bit interpreter), so they stay
  exact for any run length, and allocate nothing.
- The RTOS tick: on the board every asyncio wait ends at the next 10 ms FreeRTOS
  tick or at an ISR's notification. install() wraps the poller asyncio waits in:
  a timed wait ends at the first tick boundary (pod clock since boot) at or after
  its deadline; I/O readiness still ends it at once; a FrameTimer's instant ends
  it at once, as a machine.Timer interrupt does on the board.
- A one-shot timer with a callback (Alarm), as the board's machine.Timer: its
  callback is scheduled at the instant and runs at the interpreter's next
  branch, whatever task the asyncio loop is running.
- The host's CLOCK_MONOTONIC in us, unwrapped, for the LED datagrams.
"""
import _thread
import asyncio
import os
import select
import time
from asyncio import core

import micropython

from micropython import const

from pod.flagwait import FlagWait  # the await protocol of the board's FrameTimer

TICK_US = const(10000)  # FreeRTOS tick of the image: CONFIG_FREERTOS_HZ = 100 (board-port.md section 1)
TIMER_WAKE_US = const(0)  # board ISR -> task -> scheduled callback: no cited figure; the host adds ~0.1 ms
_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)
_BIG = const(1000000000)  # parts per billion
_HALF_BIG = const(500000000)
_CORR_MAX = const(570000000)  # |chunk x ppb| bound: with |remainder| < 5e8 the sum stays a small int
_PPB_MAX = const(1000000)  # 1000 ppm: far beyond any crystal, keeps the chunk >= 570 us
_WAIT_MAX_US = const(1000000)  # longest single host wait: the clock reads the host well inside its wrap
_ALARM_RECHECK_US = const(500)  # a scheduled Alarm callback not yet run: look again this often
# How far before a timer's instant the Alarm thread and the poller stop sleeping and spin: none.
# A SCHED_FIFO thread's sleep ends within tens of us; a spin keeps its core (FIFO threads of one
# priority do not share it), and the eight pods of a circle, two threads each, spinning 200 us
# at the same instant put a 0.6-1 ms tail on their frames' start on a 2-core machine.
_ALARM_SPIN_US = const(0)

host_us = time.ticks_us  # the host clock the pod clock is built on (wraps at 2**30 on 32-bit)


def _ppb_part(d, ppb, carry):
    """round(d x ppb / 1e9) for 0 <= d < 2**30 without leaving the small ints.

    carry is a one-item list holding the remainder (1e-9 us, within +-5e8): it
    is added in and updated, so a clock's corrections sum exactly over any
    number of steps (a list item, not a returned tuple: no allocation)."""
    if not ppb:
        return 0
    ch = _CORR_MAX // (ppb if ppb > 0 else -ppb)
    rem = carry[0]
    out = 0
    while d > 0:
        c = d if d < ch else ch
        d -= c
        t = c * ppb + rem
        if t >= _HALF_BIG:
            t -= _BIG
            out += 1
        elif t < -_HALF_BIG:
            t += _BIG
            out -= 1
        rem = t
    carry[0] = rem
    return out


def _diff(a, b):
    # ticks_diff on the pod's 2**30 period, whatever the interpreter's own
    return (((a - b) & _MASK) ^ _HALF) - _HALF  # a - b + 2**29 could leave the small ints


def _wrap_add(a, b):
    # (a + b) mod 2**30 for 0 <= a, b < 2**30: a + b itself may not be a small int
    return a + b if b <= _MASK - a else b - (_MASK - a) - 1


class PodClock:
    """The pod's tick clock over a host clock source (a function returning us that
    wraps at 2**30 or later). advance() reads the source once and moves the pod
    clock (us, ms: wrapped at 2**30), the RTOS tick phase (pod us since the last
    tick boundary) and the host time accumulated since the start (host_hi x 2**30
    + host_lo us). The source must be read at least once per 2**30 us (17.9 min);
    the tick poller reads it at least every second. No allocation."""

    def __init__(self, source, us0=0, ms0=0, ppb=0):
        ppb = _PPB_MAX if ppb > _PPB_MAX else (-_PPB_MAX if ppb < -_PPB_MAX else ppb)
        self.source = source
        self.ppb = ppb
        self._carry = [0]  # the ppb correction's remainder, in 1e-9 us, within +-5e8
        self._h = source() & _MASK
        self.us = us0 & _MASK
        self.ms = ms0 & _MASK
        self._sub = 0  # pod us past the last whole ms
        self.phase = 0  # pod us since the last RTOS tick; ticks at start + k x TICK_US
        self.host_lo = 0
        self.host_hi = 0
        self.busy = False

    def advance(self):
        # busy: a timer callback the interpreter runs at a branch in here waits for the
        # end (Alarm.run), so it never sees the clock half moved; a store is no branch
        self.busy = True
        h = self.source() & _MASK
        d = (h - self._h) & _MASK
        self._h = h
        if d:
            self.host_lo = lo = _wrap_add(self.host_lo, d)
            if lo < d:
                self.host_hi += 1
            corr = _ppb_part(d, self.ppb, self._carry)
            us = _wrap_add(self.us, d)
            self.us = (us + corr) & _MASK if corr < 0 else _wrap_add(us, corr)
            q = d // 1000
            r = d - q * 1000 + self._sub + corr
            q += r // 1000
            self._sub = r % 1000
            self.ms = _wrap_add(self.ms, q)
            self.phase = (self.phase + d % TICK_US + corr % TICK_US) % TICK_US
        self.busy = False
        if _waiting[0]:
            _run_waiting()
        if _armed[0] and self is clock:
            _run_due(self.us)  # the interpreter is here anyway: no wait for the ISR thread's turn


def _env_int(name):
    v = os.getenv(name)
    return int(v) if v else 0


def _host_full_us(u, m):
    # CLOCK_MONOTONIC in us from ticks_us (u) and ticks_ms (m), both the monotonic
    # clock mod 2**30 here; /proc/uptime (same clock unless the host suspended)
    # counts the 2**30 ms wraps (12.4 days). Runs once, at import: big ints are fine.
    k = 0
    try:
        with open("/proc/uptime") as f:
            up_ms = int(float(f.read().split()[0]) * 1000)
        k = (up_ms - m + (1 << 29)) // (1 << 30)
    except (OSError, ValueError):
        pass
    ms = m + k * (1 << 30)
    return ms * 1000 + ((u - ms * 1000 + (1 << 29)) % (1 << 30) - (1 << 29))


_u0 = time.ticks_us()
_m0 = time.ticks_ms()
_base = _host_full_us(_u0, _m0)
_base_hi = _base >> 30
_base_lo = _base & _MASK
_ppb = int(float(os.getenv("HYPNOLUM_CLOCK_PPM") or "0") * 1000)
clock = PodClock(host_us, _env_int("HYPNOLUM_TICKS_US0"), _env_int("HYPNOLUM_TICKS_MS0"), _ppb)


def ticks_us():
    c = clock
    c.advance()
    return c.us


def ticks_ms():
    c = clock
    c.advance()
    return c.ms


def put_host_us(buf, off, delta_us):
    """Write, as u64 little-endian at buf[off], the host's CLOCK_MONOTONIC us at the
    clock's last reading plus delta_us (|delta_us| < 2**29). No allocation."""
    c = clock
    lo = _wrap_add(_base_lo, c.host_lo)
    hi = _base_hi + c.host_hi + (1 if lo < c.host_lo else 0)
    if delta_us >= 0:
        n = _wrap_add(lo, delta_us)
        if n < lo:
            hi += 1
    else:
        n = (lo + delta_us) & _MASK
        if n > lo:
            hi -= 1
    buf[off] = n & 0xFF
    buf[off + 1] = n >> 8 & 0xFF
    buf[off + 2] = n >> 16 & 0xFF
    buf[off + 3] = (n >> 24 & 0x3F) | (hi & 3) << 6
    buf[off + 4] = hi >> 2 & 0xFF
    buf[off + 5] = hi >> 10 & 0xFF
    buf[off + 6] = hi >> 18 & 0xFF
    buf[off + 7] = hi >> 26 & 0xFF


_scratch = [0]  # host_delta's carry: each interval is rounded on its own


def host_delta(pod_us):
    """A pod-clock interval (0 <= pod_us < 2**30) as host us: the inverse of the clock error."""
    _scratch[0] = 0
    return pod_us - _ppb_part(pod_us, clock.ppb, _scratch)


def tick_phase_us():
    """Pod us since the last RTOS tick boundary (tests read it)."""
    c = clock
    c.advance()
    return c.phase


# ---------------------------------------------------------------------------
# Frame timer and the tick-quantised asyncio poller

_timers = []  # every FrameTimer made; the poller fires the armed ones


class _TimerFlag(asyncio.ThreadSafeFlag):
    # registered with the tick poller itself, not with the OS poll set
    reg = False


class FrameTimer(FlagWait):
    """The shim of hal.FrameTimer (firmware/hal.py is the contract): arm(due_us)
    then await wait(); the tick poller wakes the waiting task at due_us, as the
    board's machine.Timer interrupt does, not at an RTOS tick. No allocation."""

    def __init__(self, timer_id=0):
        self._init_wait(_TimerFlag())
        self._ready = ((self._flag, select.POLLIN),)
        self._due = 0
        self.armed = False
        _timers.append(self)

    def arm(self, due_us):
        self._flag.state = 0
        self._rearm()
        self._due = due_us & _MASK
        self.armed = True


_alarms = []  # every Alarm made; the poller runs the due ones when the interpreter waits
_waiting = [0]  # 1: an Alarm's callback waits for the clock's advance to end
_armed = [0]  # Alarms armed


def _run_due(now):
    for a in _alarms:
        if a.armed and _diff(a._due, now) <= 0:
            a.run()


def _run_waiting():
    _waiting[0] = 0
    for a in _alarms:
        if a._waits:
            a._waits = False
            a.run()


class Alarm:
    """The board's one-shot machine.Timer with a callback (firmware/hal.py Leds
    uses timer 1 so): arm(due_us) calls callback(self) once at pod instant due_us.

    On the board the timer's ISR schedules the callback (micropython.schedule)
    and wakes the main task; the interpreter runs it at its next branch, even in
    the middle of another task's code (ports/esp32/machine_timer.c:169-171,
    py/vm.c:1341-1372). Here a host thread stands in for the ISR: it sleeps to
    the instant and schedules the callback, so a busy interpreter runs it at its
    next branch as the board does; an interpreter waiting in the tick poller is
    woken for it (TickPoller), as the ISR wakes the board's main task. Only the
    interpreter's thread changes .armed, so the callback runs once per arming.
    No allocation per arming."""

    def __init__(self, callback):
        self._cb = callback
        self._run_cb = self._scheduled  # one bound method: scheduling allocates nothing
        self._due = 0  # pod us
        self._host_due = 0  # host us (time.ticks_us)
        self._gen = 0
        self.armed = False
        self._queued = False  # a scheduled callback not yet run: the ISR adds no other
        self._waits = False  # came inside the clock's advance: run at its end
        self._go = _thread.allocate_lock()
        self._go.acquire()
        self._started = False
        _alarms.append(self)
        _thread.start_new_thread(self._isr, ())
        while not self._started:  # what a thread allocates to start is done here, not later
            time.sleep_us(100)

    def arm(self, due_us):
        c = clock
        c.advance()
        left = _diff(due_us & _MASK, c.us)
        self._gen += 1
        self._due = due_us & _MASK
        self._host_due = time.ticks_add(host_us(), host_delta(left) if left > 0 else 0)
        if not self.armed:
            _armed[0] += 1
        self.armed = True
        if self._go.locked():
            self._go.release()

    def disarm(self):
        if self.armed:
            _armed[0] -= 1
        self.armed = False
        self._gen += 1

    def run(self):
        # from the interpreter's thread: the callback, once per arming, once its instant
        # has come by the clock's last reading; inside the clock's advance, at its end
        if self.armed and _diff(self._due, clock.us) <= 0:
            if clock.busy:
                self._waits = True
                _waiting[0] = 1
                return
            self.armed = False
            _armed[0] -= 1
            self._cb(self)

    def _scheduled(self, gen):
        # the ISR thread's callback: read the clock, whose advance runs the due alarms
        self._queued = False
        if gen != self._gen:
            return
        if clock.busy:
            self._waits = True
            _waiting[0] = 1
            return
        clock.advance()

    def _isr(self):
        # the timer's ISR: at the instant, schedule the callback; again every
        # _ALARM_RECHECK_US while it is armed and has not run (the interpreter ran it too
        # early by the pod clock's rounding, or the schedule queue was full)
        diff = time.ticks_diff
        self._started = True
        while True:
            self._go.acquire()
            while self.armed:  # re-read each turn: a re-arming moves the instant
                left = diff(self._host_due, host_us())
                if left > 0:
                    if left > _ALARM_SPIN_US:
                        time.sleep_us(left - _ALARM_SPIN_US)
                    continue
                if not self._queued:  # one entry at a time: the queue is shared (USB completions)
                    self._queued = True
                    try:
                        micropython.schedule(self._run_cb, self._gen)
                    except RuntimeError:  # the schedule queue is full: try again below
                        self._queued = False
                time.sleep_us(_ALARM_RECHECK_US)


def _fire():
    # run the due alarms' callbacks and set the flags of armed timers whose instant
    # has come; the one ready to report, or None
    now = clock.us
    _run_due(now)
    ready = None
    for t in _timers:
        if t.armed and _diff(t._due, now) + TIMER_WAKE_US <= 0:
            t.armed = False
            t._flag.state = 1
        f = t._flag
        if ready is None and f.reg and f.state:
            ready = t._ready
    return ready


def _timer_left():
    # us until the nearest armed timer's instant, or -1
    now = clock.us
    left = -1
    for t in _timers:
        if t.armed:
            d = _diff(t._due, now) + TIMER_WAKE_US
            if d < 0:
                d = 0
            if left < 0 or d < left:
                left = d
    for a in _alarms:
        if a.armed:
            d = _diff(a._due, now)
            if d < 0:
                d = 0
            if left < 0 or d < left:
                left = d
    return left


class Readable:
    """`await r.wait()` until a socket can be read (or accepted) without blocking, or, with
    flag, until an asyncio.ThreadSafeFlag is set (then cleared): parked on asyncio's I/O
    queue as the firmware's FlagWait parks, no coroutine per wait. The stand-ins of the
    board's C drivers (machine.USBDevice, usbcable) wait so: what they allocate is charged
    to the pod's heap, where the board's C allocates nothing. Their own, not pod.flagwait's:
    they must run any firmware, also one that predates it."""

    def __init__(self, obj, flag=False):
        self._s = obj
        self._flag = flag
        self._waiting = False
        self._stop = StopIteration()

    def wait(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        s = self._s
        if not self._waiting and not (self._flag and s.state):
            self._waiting = True
            core._io_queue.queue_read(s)
            return None
        self._waiting = False
        if self._flag:
            s.state = 0
        self._stop.__traceback__ = None
        raise self._stop


class Flag(asyncio.ThreadSafeFlag):
    """A ThreadSafeFlag whose `await flag.wait()` makes no coroutine (Readable)."""

    def __init__(self):
        super().__init__()
        self._park = Readable(self, True)

    def wait(self):
        return self._park


class TickPoller:
    """Wraps the select.poll object asyncio's IOQueue waits in (extmod/asyncio/core.py
    at v1.28.0: wait_io_event -> poller.ipoll(dt)). Timed waits end on an RTOS tick
    boundary as on the board; I/O and frame timers end them at once.

    Objects without a file descriptor (asyncio.ThreadSafeFlag: the USB link's
    transfer flags) are polled here, first, as the board's modselect polls every
    object before it waits (extmod/modselect.c:398-412, MICROPY_PY_SELECT_POSIX_
    OPTIMISATIONS off on the ESP32). Left in the unix port's poll set, each poll
    would first block up to 1 ms in poll(2) on the descriptors
    (modselect.c:341-396 with MICROPY_PY_SELECT_IOCTL_CALL_PERIOD_MS = 1,
    modselect.c:58; on by ports/unix/variants/mpconfigvariant_common.h:108):
    even asyncio's zero-timeout poll between two ready tasks."""

    def __init__(self, real):
        self._p = real
        self._flags = []  # registered ThreadSafeFlags, polled by state

    def register(self, s, mask=select.POLLIN | select.POLLOUT):
        t = type(s)
        if t is _TimerFlag:
            s.reg = True
        elif isinstance(s, asyncio.ThreadSafeFlag):
            try:
                s._hl_ready
            except AttributeError:
                s._hl_ready = ((s, select.POLLIN),)  # once per flag: its poll result
            if s not in self._flags:
                self._flags.append(s)
        else:
            self._p.register(s, mask)

    def modify(self, s, mask):
        if type(s) is not _TimerFlag and not isinstance(s, asyncio.ThreadSafeFlag):
            self._p.modify(s, mask)

    def unregister(self, s):
        if type(s) is _TimerFlag:
            s.reg = False
        elif isinstance(s, asyncio.ThreadSafeFlag):
            if s in self._flags:
                self._flags.remove(s)
        else:
            self._p.unregister(s)

    def _flag_ready(self):
        # a set ThreadSafeFlag's poll result, or None
        for f in self._flags:
            if f.state:
                return f._hl_ready
        return None

    def ipoll(self, dt=-1, flags=0):
        c = clock
        c.advance()
        r = _fire()
        if r is None:
            r = self._flag_ready()
        if r is not None:
            return r
        p = self._p
        if dt == 0:
            return p.ipoll(0)
        diff = time.ticks_diff
        start = time.ticks_ms()  # asyncio's clock: its deadline is start + dt
        while True:
            # the board's ipoll wakes at every tick and returns at the first with
            # ticks_ms - start >= dt: sleep straight to the first tick that can
            w = TICK_US - c.phase
            if dt > 0:
                need = dt - 1 - diff(time.ticks_ms(), start)
                if need > 0:
                    need = need * 1000 if need < 1000 else _WAIT_MAX_US
                    if w < need:
                        w += (need - w + TICK_US - 1) // TICK_US * TICK_US
            else:
                w = _WAIT_MAX_US  # only I/O or a timer can end it: no tick matters
            t = _timer_left()
            if 0 <= t < w:
                w = t
            if self._sleep(w, t == w) == 1:
                return p.ipoll(0)
            c.advance()
            r = _fire()
            if r is None:
                r = self._flag_ready()  # set by a callback that ran meanwhile
            if r is not None:
                return r
            if dt > 0 and diff(time.ticks_ms(), start) >= dt:
                return p.ipoll(0)

    def _sleep(self, w, timer):
        # wait w pod us, or until an OS-polled object is ready (1) or a flag is set
        # (2); for a timer (its instant ends the wait), the last _ALARM_SPIN_US spin
        # (none: see its definition)
        c = clock
        target = _wrap_add(c.us, w)
        ms = w // 1000
        if ms:
            # the poll runs the callbacks scheduled since the last branch first
            # (modselect.c:345); one may set a flag, which must not then wait out ms
            for _ in self._p.ipoll(0):
                return 1
            if self._flag_ready() is not None:
                return 2
            for _ in self._p.ipoll(ms):
                return 1
            c.advance()
        left = _diff(target, c.us)
        if timer:
            left -= _ALARM_SPIN_US
        if left > 0:
            time.sleep_us(left)  # the OS poll counts whole ms; the rest (< 1 ms) is a plain sleep
            c.advance()
        if timer:
            while _diff(target, c.us) > 0:
                c.advance()
        return 0


class _TickIOQueue(core.IOQueue):
    # asyncio.new_event_loop() makes a new IOQueue: it gets the tick model too
    def __init__(self):
        super().__init__()
        self.poller = TickPoller(self.poller)


def install():
    """Put asyncio's waits on the RTOS tick (the shim does this at import)."""
    q = core._io_queue
    if type(q.poller) is not TickPoller:
        q.poller = TickPoller(q.poller)
    core.IOQueue = _TickIOQueue
