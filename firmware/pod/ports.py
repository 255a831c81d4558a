"""The one pod link over several transports: one Port in front of the CDC port,
the BLE port and any other, forwarding to one of them at a time.

Every transport's pod end is a Port (hal.open_link's contract): write(buf, n),
tx_free(), readinto(buf), await wait(), and up(): a host is attached on it
right now (USB: the host configured the device and holds the port open; BLE:
a bonded, encrypted central is connected). Ports presents the same contract
to pod/link.py. The first port that comes up becomes the active one and keeps
the link while it stays up; when it goes down, the first other port that is
up takes over, what the new one received while it stood by is dropped (a
standby host's commands are not applied late), and the link starts over on
it: on_switch() is called at the link's next read, between frames (the app says HELLO
there; a switch is found inside tx_free() or write(), in the middle of a send whose frame is
in the encoder's buffer). While no port is up the
last active one keeps taking bytes into its ring, as a lone CDC port does.

The choice is made on every call (a few method calls, no allocation), so a
transport that goes away is left at the next frame the pod sends: telemetry
goes out several times a second. wait() is one flag of Ports' own, set by a
watcher task per port when bytes arrive on the active one, and by a switch.
"""
import asyncio

from pod.flagwait import FlagWait


class Ports(FlagWait):
    def __init__(self, ports):
        """ports: the transports' Ports, in order of preference when several are up."""
        self._ports = ports
        self._active = ports[0]
        self._init_wait(asyncio.ThreadSafeFlag())
        self._watchers = None
        self._scratch = bytearray(64)
        self._moved = False
        self.switches = 0
        self.on_switch = None  # called after the active port changed: the link starts over

    @property
    def problems(self):
        """What the transports found wrong at start (a torn bond file), for the link's LOG."""
        return [m for p in self._ports for m in getattr(p, "problems", ())]

    @property
    def active(self):
        return self._active

    def _port(self):
        a = self._active
        if a.up():
            return a
        for p in self._ports:
            if p is not a and p.up():
                self._switch(p)
                return p
        return a

    def _switch(self, p):
        self._active = p
        self.switches += 1
        s = self._scratch
        while p.readinto(s):  # a standby host's bytes: not applied now
            pass
        self._moved = True  # said at the next readinto (rx_task, between frames): this may be inside a send
        self._flag.set()  # rx_task looks at the new port

    def up(self):
        return self._port().up()

    def tx_free(self):
        return self._port().tx_free()

    def write(self, buf, n):
        return self._port().write(buf, n)

    def readinto(self, buf):
        p = self._port()
        if self._moved:
            self._moved = False
            if self.on_switch is not None:
                self.on_switch()
        return p.readinto(buf)

    def wait(self):
        if self._watchers is None:  # the first wait runs in the link's task: the loop is running
            self._watchers = [asyncio.create_task(self._watch(p)) for p in self._ports]
        return self

    async def _watch(self, p):
        while True:
            await p.wait()
            if p is self._port():
                self._flag.set()

    async def run(self):
        """The transports' own tasks (the BLE port's notification pump), until one fails."""
        runs = [p.run() for p in self._ports if hasattr(p, "run")]
        if runs:
            await asyncio.gather(*runs)

