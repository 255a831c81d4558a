"""A minimal host on one pod's pty, as hostd drives a board: send frames,
collect decoded frames, wait for one."""
import asyncio
import time

import serial

from hypnolum.protocol import codec


class PtyHost:
    def __init__(self, path):
        self.port = serial.Serial(str(path), timeout=0)
        self.port.reset_input_buffer()
        self.decoder = codec.FrameDecoder()
        self.frames = []
        self.seq = 0

    def send(self, name, fields):
        self.seq += 1
        # a leading delimiter ends whatever partial frame the pod may hold
        self.port.write(b"\x00" + codec.encode(name, self.seq, fields))
        return self.seq

    def connect(self):
        return self.send("connect", {"protocol_version": codec.PROTOCOL_VERSION, "fingerprint": codec.FINGERPRINT,
                                     "host_id": "test"})

    async def wait_for(self, pred, timeout=10.0, what="frame", start=0):
        """First frame from index start on (already received or arriving) matching pred."""
        deadline = time.monotonic() + timeout
        i = start
        while True:
            while i < len(self.frames):
                f = self.frames[i]
                i += 1
                if pred(f):
                    return f
            if time.monotonic() > deadline:
                names = sorted({f.name for f in self.frames})
                raise AssertionError(f"no {what} within {timeout} s; got {names}, errors {self.decoder.errors}")
            self.frames += self.decoder.feed(self.port.read(65536))
            await asyncio.sleep(0.01)

    async def answer(self, seq, timeout=5.0):
        return await self.wait_for(lambda f: f.name in ("ack", "nack") and f.fields["ack_seq"] == seq,
                                   timeout, f"answer to {seq}")

    def close(self):
        self.port.close()
