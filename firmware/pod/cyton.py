"""OpenBCI Cyton headset: start the stream, parse packets, send EEG_BATCH frames.

Start-up: 's' (stop a stream left running), 'v' (soft reset; the board
answers a banner ending "$$$"), wait for "$$$" with a timeout and retry; then
the channel count: 'C' for 16 channels (the board answers "...16$$$" when a
Daisy is fitted, "no daisy to attach!8$$$" when not: an error, the pod retries
and says why) or 'c' for 8 (no answer unless a Daisy was attached); then 'd'
(channel defaults, gain 24, answered "...$$$"); then 'b' (start streaming).

With the Daisy the board alternates packets: odd counters carry channels
1-8, even counters channels 9-16. The parser pairs an even packet with the odd
one after it into one 16-channel sample (sequence = packet seq / 2), as
BrainFlow does, so both give the same samples; a packet without its partner
is a lost sample.

Railed channels: every batch is scanned for |count| >= 90 % of full scale
(railed, as the OpenBCI GUI flags it) and >= 75 % (near railed); the bits
accumulate until the band-power task reports and clears them.

Stream packet, 33 bytes: 0xA0, sample counter u8, 8 channels x int24
big-endian, 6 aux bytes, footer 0xC0..0xC6. The parser resyncs after garbage
at the next 0xA0 whose footer checks out. The 8-bit counter is widened into a
32-bit sample sequence, held as its low 30 bits and the 2 bits above (small
ints on the board: a u32 past 2**30 would be a heap int per sample); a jump in
it is a gap (counted, and the next batch carries EEG_FLAG_GAP_BEFORE). Samples are batched (10 = 40 ms at 250 Hz) and
copied as the raw 24-bit big-endian bytes: no conversion, no allocation per sample.

Reading. Once streaming, the UART is polled at every RTOS tick (10 ms, about
3 packets), not awaited: an await parks on asyncio's I/O queue, which
allocates its entry each time (extmod/asyncio/core.py:75-84 at
v1.28.0), and the board's UART would wake the loop for every packet
(hal.open_headset). A sample's time is its read's, up to one tick late.
"""
import array
import asyncio

import hal
import micropython
from micropython import const

from pod import wire
from pod.mem import copy as _copy  # no allocation per sample

PACKET_SIZE = const(33)
_START = const(0xA0)
_FOOTER_MIN = const(0xC0)
_FOOTER_MAX = const(0xC6)
_CYTON_CHANNELS = const(8)
_SAMPLES_OFF = const(2)  # first channel byte in a packet
BATCH_SAMPLES = const(10)
BATCH_MS = const(40)  # default batching latency (pod.json eeg_batch_ms): the wire efficiency target holds at this
_READY_TIMEOUT_MS = const(3000)  # the banner takes ~1 s after 'v' on a real board
_RETRY_PAUSE_MS = const(2000)
_CHUNK = const(512)  # a read: 15 packets, what 60 ms bring (a poll every tick takes ~3-6)
_POLL_MS = const(1)  # the stream is read at each RTOS tick: an asyncio sleep ends at the next (board-port.md 1)
# wire layout (values generated from protocol/messages.py by `make codec`)
_FIXED = const(10)  # eeg_batch.samples: after first_seq u32, ticks_ms u32, channels u8, flags u8
_HDR = const(4)  # HEADER_SIZE
# end of wire layout
_MASK30 = const(0x3FFFFFFF)  # sequences: low 30 bits here, the bits above counted apart
RAILED_COUNTS = const(7549746)  # 90 % of full scale (2**23 - 1 counts)
NEAR_RAILED_COUNTS = const(6291455)  # 75 % of full scale
_DAISY_OFF = const(24)  # Daisy channels' bytes in a 16-channel sample
_DEFAULT_GAIN = const(24)  # what 'd' sets on every channel


@micropython.viper
def _rail_scan(samples, n: int, nch: int, masks):
    # OR into masks[0] / masks[1] the channels at >= 90 % / >= 75 % of full scale
    s = ptr8(samples)
    m = ptr32(masks)
    railed = 0
    near = 0
    ch = 0
    while ch < nch:
        i = 0
        p = ch * 3
        step = nch * 3
        big = 0
        while i < n:
            v = (s[p] << 16) | (s[p + 1] << 8) | s[p + 2]
            if v & 0x800000:
                v = 0x1000000 - v  # |negative|
            if v > big:
                big = v
            p += step
            i += 1
        if big >= RAILED_COUNTS:
            railed |= 1 << ch
        if big >= NEAR_RAILED_COUNTS:
            near |= 1 << ch
        ch += 1
    m[0] = m[0] | railed
    m[1] = m[1] | near



class Parser:
    """Cyton byte stream -> batches. on_batch(first_seq, ticks_ms, flags, samples, n_bytes).

    first_seq is the low 30 bits; self.batch_hi the two above, during the call.

    samples is the parser's batch buffer, valid during the call only. tap, if
    set, sees each sample at once: tap(batch, byte offset of the sample), the
    sample's channels as 24-bit big-endian counts (pod/alpha.py follows them).
    channels > 8 means the Daisy: packets are paired into 16-channel samples.
    """

    def __init__(self, channels, on_batch, batch_samples=BATCH_SAMPLES):
        self.channels = channels
        self.daisy = channels > _CYTON_CHANNELS
        self.on_batch = on_batch
        self.tap = None  # tap(batch, byte offset): called with every sample as it enters the batch
        self.batch_samples = batch_samples
        self.sample_bytes = channels * 3
        self.pkt = bytearray(PACKET_SIZE)
        self.half = bytearray(_DAISY_OFF)  # Daisy: channels 9-16 waiting for their partner packet
        self.batch = bytearray(batch_samples * channels * 3)
        self.masks = array.array("i", (0, 0))  # railed, near railed bits since the last take_masks()
        self._pos = 0  # bytes of the current packet held in pkt
        self._n = 0  # samples in the batch
        self._first_seq = 0
        self._first_hi = 0
        self._first_ms = 0
        self._flags = 0
        self._gap_pending = False
        self._last_counter = -1  # none yet since (re)start
        self._pseq = 0  # widened packet sequence, low 30 bits
        self._pseq_hi = 0  # its bits 30-32 (a Daisy sample's seq is the packet's / 2)
        self._started = False  # a packet was ever seen
        self._even = -1  # Daisy: packet seq of the held even packet
        self._even_hi = 0
        self._even_ms = 0
        self._emitted = False  # a sample was ever emitted
        self.seq = 0  # sequence number of the last sample: low 30 bits
        self.seq_hi = 0  # ... and bits 30-31
        self.batch_hi = 0  # bits 30-31 of the first sample of the batch being handed over
        self.samples = 0
        self.gaps = 0
        self.lost = 0  # samples missing in gaps
        self.garbage = 0  # bytes skipped to resync

    def restart(self):
        """Forget the counter (the stream was restarted); the next sample is a gap.
        A tap with a reset() forgets the signal too (a new session, new offsets)."""
        self._pos = 0
        self._even = -1
        tap = self.tap
        if tap is not None and hasattr(tap, "reset"):
            tap.reset()
        if self._last_counter >= 0:
            self.flush()
            self._last_counter = -1
            self._gap_pending = True

    def take_masks(self):
        """(railed, near_railed) channel bits seen since the last call; clears them."""
        m = self.masks
        r, nr = m[0], m[1]
        m[0] = 0
        m[1] = 0
        return r, nr

    def feed(self, data, n, now_ms):
        """Consume data[0:n], read at pod time now_ms."""
        pkt = self.pkt
        pos = self._pos
        i = 0
        while i < n:
            if pos == 0:
                # find a start byte
                if data[i] != _START:
                    self.garbage += 1
                    i += 1
                    continue
            take = PACKET_SIZE - pos
            if take > n - i:
                take = n - i
            _copy(pkt, pos, data, i, take)
            pos += take
            i += take
            if pos < PACKET_SIZE:
                break
            f = pkt[PACKET_SIZE - 1]
            if _FOOTER_MIN <= f <= _FOOTER_MAX:
                self._packet(now_ms)
                pos = 0
            else:
                pos = self._resync()
        self._pos = pos

    def _resync(self):
        # a bad footer: the 0xA0 was not a start; retry from the next 0xA0 inside the packet
        pkt = self.pkt
        for k in range(1, PACKET_SIZE):
            if pkt[k] == _START:
                self.garbage += k
                _copy(pkt, 0, pkt, k, PACKET_SIZE - k)  # forward copy: safe for overlap
                return PACKET_SIZE - k
        self.garbage += PACKET_SIZE
        return 0

    def _packet(self, now_ms):
        counter = self.pkt[1]
        last = self._last_counter
        pseq = self._pseq
        if last >= 0:
            delta = (counter - last) & 0xFF
            # delta 0: a repeat or a whole 256-packet wrap; either way packets are missing
            step = delta if delta else 256
        elif self._started:
            # after a restart the counter is not trusted: the sequence just continues
            step = 1
            if self.daisy and (pseq ^ counter ^ 1) & 1:
                step = 2  # keep the parity: odd packets carry channels 1-8 (2**30 is even)
        else:
            pseq = counter
            step = 0
        if pseq <= _MASK30 - step:
            pseq += step
        else:  # carry into the high bits without forming 2**30
            pseq -= _MASK30 - step + 1
            self._pseq_hi = (self._pseq_hi + 1) & 7
        self._pseq = pseq
        self._last_counter = counter
        self._started = True
        if not self.daisy:
            self._sample(pseq, self._pseq_hi & 3, now_ms)
            return
        if not counter & 1:
            _copy(self.half, 0, self.pkt, _SAMPLES_OFF, _DAISY_OFF)
            self._even = pseq
            self._even_hi = self._pseq_hi
            self._even_ms = now_ms
            return
        even = self._even
        self._even = -1
        if even >= 0 and ((pseq - even) & _MASK30) == 1:
            # sample seq = 33-bit packet seq / 2: bit 30 of the packet's moves to bit 29
            h = self._even_hi
            self._sample((even >> 1) | (h & 1) << 29, h >> 1, self._even_ms)
        # an odd packet without its even partner: that sample is lost (counted at the next one)

    def _sample(self, sseq, shi, now_ms):
        if self._emitted:
            missing = (sseq - self.seq - 1) & _MASK30
            if missing:
                self.gaps += 1
                self.lost += missing
                self.flush()
                self._gap_pending = True
        self.seq = sseq
        self.seq_hi = shi
        self._emitted = True
        c = self.samples
        self.samples = c + 1 if c < _MASK30 else 0  # a counter, wrapping at 2**30 (no heap int)
        n = self._n
        if n == 0:
            self._first_seq = sseq
            self._first_hi = shi
            self._first_ms = now_ms
            self._flags = wire.EEG_FLAG_GAP_BEFORE if self._gap_pending else 0
            self._gap_pending = False
        sb = self.sample_bytes
        if self.daisy:
            _copy(self.batch, n * sb, self.pkt, _SAMPLES_OFF, _DAISY_OFF)  # odd packet: channels 1-8
            _copy(self.batch, n * sb + _DAISY_OFF, self.half, 0, sb - _DAISY_OFF)  # the even one before: 9-16
        else:
            _copy(self.batch, n * sb, self.pkt, _SAMPLES_OFF, sb)
        tap = self.tap
        if tap is not None:
            tap(self.batch, n * sb)
        n += 1
        self._n = n
        if n >= self.batch_samples:
            self.flush()

    def flush(self):
        """Hand over the samples batched so far, if any."""
        n = self._n
        if n:
            self._n = 0
            _rail_scan(self.batch, n, self.channels, self.masks)
            self.batch_hi = self._first_hi
            self.on_batch(self._first_seq, self._first_ms, self._flags, self.batch, n * self.sample_bytes)


class Headset:
    """Runs a Cyton on hal.open_headset() and sends its batches over the link."""

    def __init__(self, link, channels, baud, sample_rate_hz=250, batch_ms=BATCH_MS):
        self.link = link
        self.channels = channels
        self.baud = baud
        # a batch spans batch_ms whatever the rate: at 40 ms, 10 samples at 250 Hz, 5 at 125 Hz (Daisy)
        self.parser = Parser(channels, self._on_batch, max(1, sample_rate_hz * batch_ms // 1000))
        self.dropped = 0  # samples parsed but not sent (link backlog); still in the ring
        self.ready = False
        self.start_retries = 0
        self.ring = None  # ring.SampleRing: every sample is kept for replay and band powers
        self.gain = _DEFAULT_GAIN  # every channel's, as 'd' sets it
        self.last_error = ""

    @property
    def samples(self):
        return self.parser.samples

    @property
    def gaps(self):
        return self.parser.gaps

    def _on_batch(self, first_seq, ticks_ms, flags, samples, nbytes):
        hi = self.parser.batch_hi
        if self.ring is not None:
            self.ring.put(first_seq, ticks_ms, samples, nbytes, hi)
        link = self.link
        if link.backlogged():
            self.dropped += nbytes // (self.channels * 3)
            return
        body = link.body
        _copy(body, _HDR + _FIXED, samples, 0, nbytes)  # samples first: pack writes only the fixed part
        end = wire.pack_eeg_batch(body, _HDR, first_seq, hi, ticks_ms, self.channels, flags, nbytes)
        link.send(wire.T_EEG_BATCH, end)

    async def _wait_ready(self, reader, buf, tail=None):
        """Read until "$$$"; False on timeout. OSError if the headset is gone.

        tail (a bytearray) receives the last bytes before the "$$$".
        """
        dollars = 0
        deadline = hal.ticks_add(hal.ticks_ms(), _READY_TIMEOUT_MS)
        while True:
            left = hal.ticks_diff(deadline, hal.ticks_ms())
            if left <= 0:
                return False
            try:
                n = await asyncio.wait_for_ms(reader.readinto(buf), left)
            except asyncio.TimeoutError:
                return False
            if not n:
                raise OSError("headset closed")
            for i in range(n):
                if tail is not None:
                    tail.append(buf[i])
                    if len(tail) > 32:
                        tail[:] = tail[-32:]
                dollars = dollars + 1 if buf[i] == 0x24 else 0  # '$'
                if dollars == 3:
                    return True

    async def _configure(self, reader, writer, buf):
        """Channel count, then defaults; False (with last_error set) if the board refuses."""
        if self.channels > _CYTON_CHANNELS:
            tail = bytearray()
            writer.write(b"C")
            await writer.drain()
            if not await self._wait_ready(reader, buf, tail):
                self.last_error = "no answer to C"
                return False
            if tail.find(b"16$$$") < 0:
                self.last_error = "no Daisy: " + bytes(tail).decode()
                return False
        else:
            writer.write(b"c")  # answered only when a Daisy was attached; 'd' below waits past it
        writer.write(b"d")
        await writer.drain()
        if not await self._wait_ready(reader, buf):
            self.last_error = "no answer to d"
            return False
        self.gain = _DEFAULT_GAIN
        self.last_error = ""
        return True

    async def _session(self, buf):
        """One connection to the headset: start it, then stream until it goes away."""
        reader, writer = await hal.open_headset(self.baud)
        try:
            while True:
                writer.write(b"sv")
                await writer.drain()
                if await self._wait_ready(reader, buf):
                    if await self._configure(reader, writer, buf):
                        break
                    self.link.send_log(wire.LOG_LEVEL_WARNING, "headset: " + self.last_error)
                self.start_retries += 1
                await asyncio.sleep_ms(_RETRY_PAUSE_MS)
            writer.write(b"b")
            await writer.drain()
            self.ready = True
            self.parser.restart()
            feed = self.parser.feed
            uart = reader.s  # polled: a wake per packet would cost asyncio's I/O queue an allocation
            size = len(buf)
            sleep = asyncio.sleep_ms
            ticks_ms = hal.ticks_ms
            while True:
                n = uart.readinto(buf)
                if n is None:  # nothing has arrived
                    await sleep(_POLL_MS)
                    continue
                if not n:
                    return  # headset gone (emulator unplug); a board's UART never ends
                feed(buf, n, ticks_ms())
                if n < size:  # all that had arrived: the next poll in a tick
                    await sleep(_POLL_MS)
        finally:
            self.ready = False
            writer.close()

    async def run(self):
        buf = bytearray(_CHUNK)
        while True:
            try:
                await self._session(buf)
            except OSError:
                pass  # not there yet, or unplugged mid-stream: try again shortly
            self.parser.flush()
            await asyncio.sleep_ms(_RETRY_PAUSE_MS)
