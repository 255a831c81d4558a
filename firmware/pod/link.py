"""The pod link: frames in, commands dispatched, answers and telemetry out.

rx: bytes -> framing.Decoder -> a handler per message type (a table, not a
chain of ifs). tx: every frame gets the next u16 sequence number. Commands
(SCENE) are answered ACK or NACK; a NACK carries the refused field and the
range it allows when the command's sink named them (pod/refusal.py). A
command whose seq equals the last one handled is a host retry: its answer is
sent again, the command is not applied twice. Telemetry is never acknowledged.

The port (hal.open_link) never blocks: a frame is copied whole into its TX
ring or not at all, so a send costs a copy and the render loop never waits
for the host. The ring is the backlog. Telemetry stops going in while less
than _RESERVE is free (dropped and counted in tx_dropped), so answers, HELLO
and LOG still fit when the host stops reading; they are lost (tx_lost) only
when the ring is truly full. The LED preview is dropped first: it goes in only
while _SPARE is free (spare()), so a slow link keeps its room for EEG.
Neither direction allocates per frame.
"""
import struct

import hal
from micropython import const

from pod import build, framing, refusal, wire
from pod.mem import copy as _copy

_RX_CHUNK = const(256)
_MAX_ENCODED = const(1030)  # == framing.MAX_ENCODED, checked below
_RESERVE = const(2 * _MAX_ENCODED)  # free TX bytes kept for answers: telemetry stops short of it
_SPARE = const(3 * _MAX_ENCODED)  # free TX bytes below which the LED preview is dropped (before EEG)
# wire layout (values generated from protocol/messages.py by `make codec`)
_NO_FIELD = const(255)  # NACK_NO_FIELD
_DETAIL = const(10)  # NACK_DETAIL_SIZE: field u8, item u8, lo i32, hi i32
_NACK_DETAIL = const(3)  # nack.detail
_HDR = const(4)  # HEADER_SIZE
_PING_SIZE = const(12)  # ping.size: nonce u32, host_time_us u64
_PONG_SIZE = const(20)  # pong.size: the same two, then pod_rx_us u32, pod_tx_us u32
_PONG_RX_US = const(12)  # pong.pod_rx_us
_MAX_FRAME = const(1024)  # MAX_FRAME
_CRC = const(4)  # CRC_SIZE
# end of wire layout
_MAX_END = const(_MAX_FRAME - _CRC)  # a payload ends at most here
_encode_frame = framing.encode_frame

if framing.MAX_ENCODED != _MAX_ENCODED:
    raise ImportError("link: frame sizes do not match framing.py")
if struct.calcsize("<BBii") != _DETAIL:
    raise ImportError("link: NACK detail layout does not match wire.py")


def _pong_layout_ok():
    # PONG starts with PING's payload byte for byte: the pod echoes those bytes
    # instead of unpacking host_time_us (a u64: a heap int on the board)
    b = bytearray(_PONG_SIZE)
    return (wire.pack_pong(b, 0, 0x01020304, 0x05060708090A, 0, 0) == _PONG_SIZE
            and wire.unpack_ping(b, 0, _PING_SIZE) == (0x01020304, 0x05060708090A))


if not _pong_layout_ok():
    raise ImportError("link: PING/PONG layout does not match wire.py")


class Link:
    def __init__(self, port, hello_fields, scene_sink):
        """port: hal.open_link()'s. hello_fields: (pod_id, fw_version, boot_id, led_count, eeg_channels, sample_rate_hz).

        scene_sink(scene) applies a SCENE's scene (a wire.Scene, new for each frame) and
        returns 0, or a wire.NACK_REASON_* refusing it.
        """
        self._port = port
        self._hello = hello_fields
        self._dec = framing.Decoder(self._on_frame)
        enc = self._enc = framing.Encoder()
        self.body = enc.body  # senders pack payloads at body[HEADER_SIZE:]
        self._out = enc.out
        self._crc_table = framing.CRC_TABLE
        self._crc_ones = framing.CRC_ONES
        self._rxbuf = bytearray(_RX_CHUNK)
        self._tx_seq = 0
        self.tx_frames = 0
        self.tx_dropped = 0  # telemetry not sent: the host is not keeping up
        self.tx_lost = 0  # answers, HELLO, LOG not sent: the TX ring was full
        self.unknown_types = 0
        self.bad_messages = 0
        self.host_id = ""
        self.connected = False
        self._rx_us = 0  # ticks_us when the current read returned (PONG's pod_rx_us)
        self._last_cmd_seq = -1  # no command seen yet in this session
        self._last_cmd_type = 0
        self._last_cmd_reason = 0
        self._last_detail = [_NO_FIELD, _NO_FIELD, 0, 0]  # the retried command's NACK detail
        self.on_connect = None  # called after CONNECT's HELLO (the renderer reports its scene)
        self.spare_dropped = 0  # LED previews not sent: the TX ring was below _SPARE
        self.heard = False  # a valid frame has arrived since boot (fade to safe arms)
        self.last_rx_ms = 0  # ticks_ms of the last valid frame
        self._handlers = {
            wire.T_CONNECT: self._on_connect,
            wire.T_PING: self._on_ping,
        }
        self.register(wire.T_SCENE, scene_sink)
        # (from_seq, count) -> 0 or a NACK reason; set by the app once the ring exists

    # -- counters for STATUS ------------------------------------------------
    @property
    def rx_frames(self):
        return self._dec.frames

    @property
    def rx_errors(self):
        return self._dec.error_count + self.bad_messages + self.unknown_types

    # -- tx -----------------------------------------------------------------
    def backlogged(self):
        """True while telemetry must wait or be dropped: the host is not reading fast enough."""
        return self._port.tx_free() < _RESERVE

    def send(self, type_, end):
        """Frame and queue the payload already packed at body[HEADER_SIZE:end].

        False if the TX ring cannot take the whole frame (counted in tx_lost)."""
        if end > _MAX_END:
            raise ValueError("frame too long")
        n = _encode_frame(self.body, end, type_, self._tx_seq, self._crc_table, self._crc_ones, self._out)
        port = self._port
        if port.tx_free() < n:
            self.tx_lost += 1  # no sequence number used: the host sees no gap it could wait for
            return False
        port.write(self._out, n)
        self._tx_seq = (self._tx_seq + 1) & 0xFFFF
        self.tx_frames += 1
        return True

    def send_telemetry(self, type_, end):
        """send() unless the host is not keeping up; returns False if dropped."""
        if self.backlogged():
            self.tx_dropped += 1
            return False
        return self.send(type_, end)

    def spare(self):
        """True while the TX ring has _SPARE free. The LED preview goes only then (and is not
        even packed otherwise): the first thing dropped when the link is slow."""
        return self._port.tx_free() >= _SPARE

    def send_hello(self):
        # HELLO ends with the table of every message this pod knows and the layout it
        # has for each (docs/protocol.md "Compatibility"): the host uses those that match
        h = self._hello
        end = wire.pack_hello(
            self.body, _HDR, h[0], h[1], wire.PROTOCOL_VERSION, wire.FINGERPRINT, build.build_hash(), h[2], h[3], h[4], h[5],
            wire.MESSAGE_TABLE,
        )
        self.send(wire.T_HELLO, end)

    def start_over(self):
        """The link moved to another transport (pod/ports.py): a new host session begins
        there. A frame half received on the old one is dropped, and HELLO goes first."""
        self._dec.reset()
        self._last_cmd_seq = -1
        self.connected = False
        self.send_hello()

    def send_log(self, level, text):
        text = text.encode()[:200]  # the length prefix is a u8; keep well inside a frame
        self.send(wire.T_LOG, wire.pack_log(self.body, _HDR, level, text))

    def _answer(self, type_, seq, reason, detail=None):
        """ACK (reason 0) or NACK; detail: [field, item, lo, hi] (refusal.DETAIL), field
        _NO_FIELD for none."""
        if not reason:
            self.send(wire.T_ACK, wire.pack_ack(self.body, _HDR, seq))
            return
        n = 0
        if detail is not None and detail[0] != _NO_FIELD:
            struct.pack_into("<BBii", self.body, _HDR + _NACK_DETAIL, detail[0], detail[1], detail[2], detail[3])
            n = _DETAIL
        self.send(wire.T_NACK, wire.pack_nack(self.body, _HDR, seq, reason, n))

    # -- rx -----------------------------------------------------------------
    async def rx_task(self):
        buf = self._rxbuf
        port = self._port
        readinto = port.readinto
        feed = self._dec.feed
        while True:
            n = readinto(buf)  # what has arrived, without waiting: no allocation per frame
            if n:
                self._rx_us = hal.ticks_us()
                feed(buf, n)
            else:
                await port.wait()  # only an idle link costs asyncio's wait

    def _on_frame(self, type_, seq, frame, end):
        self.last_rx_ms = hal.ticks_ms()
        self.heard = True
        refusal.clear()
        handler = self._handlers.get(type_)
        if handler is None:
            self.unknown_types += 1
            self._answer(type_, seq, wire.NACK_REASON_UNKNOWN_TYPE)
            return
        try:
            handler(seq, frame, end)
        except ValueError:
            # the payload did not decode (short, long, bad length prefix)
            self.bad_messages += 1
            self._answer(type_, seq, wire.NACK_REASON_BAD_MESSAGE)

    def _on_connect(self, seq, frame, end):
        _version, _fingerprint, host_id = wire.unpack_connect(frame, _HDR, end)
        # The host compares protocol version and fingerprint from HELLO and
        # refuses a mismatch itself; the pod always introduces itself.
        self.host_id = host_id
        self.connected = True
        self._last_cmd_seq = -1  # a new session may reuse sequence numbers
        self.send_hello()
        if self.on_connect is not None:
            self.on_connect()

    def _on_ping(self, seq, frame, end):
        # PONG(nonce, host_time_us, pod_rx_us, pod_tx_us): the first two are PING's bytes
        if end != _HDR + _PING_SIZE:
            raise ValueError("ping: payload is not %d bytes" % _PING_SIZE)
        body = self.body
        _copy(body, _HDR, frame, _HDR, _PING_SIZE)
        struct.pack_into("<II", body, _HDR + _PONG_RX_US, self._rx_us, hal.ticks_us())
        self.send(wire.T_PONG, _HDR + _PONG_SIZE)

    # -- more messages, registered by the app --------------------------------
    def register(self, type_, sink, command=True):
        """Route message type_ to sink(*fields). A command's sink returns 0 or a
        wire.NACK_REASON_* and is answered (retries answered again, not re-applied);
        other messages are not answered."""
        unpack = wire.UNPACK[type_]
        if command:
            def handler(seq, frame, end):
                self._on_command(type_, sink, unpack, seq, frame, end)
        else:
            def handler(seq, frame, end):
                sink(*unpack(frame, _HDR, end))
        self._handlers[type_] = handler

    def register_raw(self, type_, handler):
        """Route message type_ to handler(seq, frame, end) as it arrives, payload at
        frame[HEADER_SIZE:end] in the decoder's buffer (valid until it returns); not answered.
        For a frame handled without unpacking it (an update's data chunk)."""
        self._handlers[type_] = handler

    def dispatch(self, seq, frame, end):
        """Hand the frame being handled to the handler registered for its type now: for a
        handler that registers the real ones on first use (the frame's type is frame[1])."""
        self._handlers[frame[1]](seq, frame, end)

    def _on_command(self, type_, sink, unpack, seq, frame, end):
        last = self._last_detail
        if seq == self._last_cmd_seq and self._last_cmd_type == type_:
            self._answer(type_, seq, self._last_cmd_reason, last)  # retry: answer again only
            return
        reason = sink(*unpack(frame, _HDR, end))
        self._last_cmd_seq = seq
        self._last_cmd_type = type_
        self._last_cmd_reason = reason
        d = refusal.DETAIL
        last[0] = d[0]
        last[1] = d[1]
        last[2] = d[2]
        last[3] = d[3]
        self._answer(type_, seq, reason, last)
