"""The one pod link over several transports: one Port in front of the CDC port,
the BLE port and any other, forwarding to one of them at a time.

Every transport's pod end is a Port (hal.open_link's contract): write(buf, n),
tx_free(), readinto(buf), await wait(), and up(): a host is attached on it
right now (USB: the host configured the device and holds the port open; BLE:
a bonded, encrypted central is connected). Ports presents the same contract
to pod/link.py. The first port that comes up becomes the active one and keeps
the link while it stays up; when it goes down, the first other port that is
up takes over, and the link starts over on it: on_switch() is called at the
link's next read, between frames (the app says HELLO there; a switch is found
inside tx_free() or write(), in the middle of a send whose frame is in the
encoder's buffer). The transports share one pair of rings (pod/linkring.py):
the ones not carrying the link stand by, taking no bytes in (a standby host's
commands are not applied, late or ever), and the new one starts with its
rings empty. While no port is up the last active one keeps taking bytes into
its ring, as a lone CDC port does.

The choice is made on every call (a few method calls, no allocation), so a
transport that goes away is left at the next frame the pod sends: telemetry
goes out several times a second. wait() is one flag that every transport
sets when bytes arrive (FlagWait.share_wait) and a switch sets: one wait per
arrival, whichever transport it came on (a standby one's bytes are dropped,
and the read after such a wake finds nothing).
"""
import asyncio

from pod.flagwait import FlagWait


class Ports(FlagWait):
    def __init__(self, ports):
        """ports: the transports' Ports, in order of preference when several are up."""
        self._ports = ports
        self._active = ports[0]
        flag = asyncio.ThreadSafeFlag()
        self._init_wait(flag)
        for p in ports:
            p.share_wait(flag)  # arrivals on any transport wake the link's one waiter
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
        self._active.stand_by(True)
        p.stand_by(False)
        self._active = p
        self.switches += 1
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

    async def run(self):
        """The transports' own tasks (the BLE port's notification pump), until one fails."""
        runs = [p.run() for p in self._ports if hasattr(p, "run")]
        if runs:
            await asyncio.gather(*runs)

