"""The OpenBCI Cyton's serial protocol, sans I/O, as the Cyton SDK documents it.

``Cyton.receive(data) -> reply bytes`` runs the command set;
``Cyton.packets_until(now_s) -> bytes`` returns the stream packets due by a
monotonic time. The board is modelled as its ADS1299 registers (board and,
if fitted, Daisy), so channel settings, the sample rate and lead-off all live
in one place, ``?`` dumps them, and the stream is encoded from them.

Commands (firmware v3 semantics; text replies only while not streaming, as
the SDK says, except the soft reset which stops the stream first):

=============  =============================================================
``v``          soft reset: defaults, stop, banner ending ``$$$``
``b`` / ``s``  start / stop the stream
``1``–``8``    channel off; ``!@#$%^&*`` on; ``q``–``i`` / ``Q``–``I`` Daisy
``x…X``        channel settings: channel, power-down, gain, input, bias, SRB2, SRB1
``d`` / ``D``  all channels to defaults / report the default settings
``z…Z``        lead-off (impedance) test current on a channel's P / N input
``0 - = p [ ]`` all channels to an internal test signal
``~N``         sample rate (``~~`` reports it)
``/N``         board mode (``//`` reports it): default, debug, analog, digital, marker
`````X``       marker mode: X goes into the first aux byte of the next packet
``<`` / ``>``  time stamping on / off
``C`` / ``c``  16 channels (Daisy) / 8 channels
``?``          register dump; ``V`` firmware version
=============  =============================================================

Multi-byte commands must arrive within 1 s, as on firmware v2+.

Stream packet, 33 bytes: 0xA0, counter u8, 8 × int24 big-endian, 6 aux
bytes, stop byte. Stop byte by board mode and time stamping: 0xC0 accel,
0xC1 raw aux (analog, digital, marker modes), 0xC4 / 0xC6 time stamped with
accel / raw aux, 0xC3 / 0xC5 on the first packet after ``<``.
With the Daisy, packets stay at 250 per second and alternate: odd counters
carry the board's 8 channels, even counters the Daisy's, each the average of
the last two ADC samples (so 16 channels at 125 Hz).
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .signals import Participant, SignalSource

PACKET_SIZE = 33
HEADER = 0xA0
FULL_SCALE = 2**23 - 1
VREF = 4.5
GAINS = (1, 2, 4, 6, 8, 12, 24)  # by GAIN_SET code 0..6
DEFAULT_GAIN = 24
G_PER_COUNT = 0.002 / 2**4  # accelerometer
SAMPLE_RATES = {0: 16000, 1: 8000, 2: 4000, 3: 2000, 4: 1000, 5: 500, 6: 250}
BOARD_MODES = ("default", "debug", "analog", "digital", "marker")
LEADOFF_CURRENT_A = 6e-9  # ADS1299 lead-off test current as the Cyton sets it (31.2 Hz AC)
LEADOFF_HZ = 31.2
SERIES_OHM = 2200  # the Cyton's input series resistor, seen in series with the electrode

BANNER = (
    b"OpenBCI V3 8-16 channel\n"
    b"On Board ADS1299 Device ID: 0x3E\n"
    b"LIS3DH Device ID: 0x33\n"
    b"Firmware: v3.1.2\n"
    b"$$$"
)
BANNER_DAISY = (
    b"OpenBCI V3 8-16 channel\n"
    b"On Board ADS1299 Device ID: 0x3E\n"
    b"On Daisy ADS1299 Device ID: 0x3E\n"
    b"LIS3DH Device ID: 0x33\n"
    b"Firmware: v3.1.2\n"
    b"$$$"
)
VERSION_REPLY = b"v3.1.2$$$"
DEFAULTS_REPLY = b"updating channel settings to default$$$"
DEFAULT_REPORT = b"060110$$$"  # power on, gain 24, normal input, in bias, SRB2 on, SRB1 off
TIMEOUT_REPLY = b"Timeout processing multi byte message - please send all commands at once as of v2$$$"
_MULTI_TIMEOUT_S = 1.0

_OFF = b"12345678qwertyui"
_ON = b"!@#$%^&*QWERTYUI"
_CHANNEL_SELECT = b"12345678QWERTYUI"  # first byte inside x...X and z...Z
# internal test signals: key -> (ADS1299 input mux, amplitude x, pulse period s); MUX 0=normal 1=shorted 5=test
_TEST_SIGNALS = {
    ord("0"): (1, 0, 0.0),
    ord("-"): (5, 1, 2**21 / 2.048e6),
    ord("="): (5, 1, 2**20 / 2.048e6),
    ord("p"): (5, 0, 0.0),  # DC
    ord("["): (5, 2, 2**21 / 2.048e6),
    ord("]"): (5, 2, 2**20 / 2.048e6),
}
_TEST_AMP_V = 4.5 / 2.4 * 1e-3  # 1x: (VREFP - VREFN) / 2.4 mV


@dataclass
class HeadsetStats:
    commands: int = 0
    unknown_commands: int = 0
    failures: int = 0  # malformed multi-byte commands
    packets: int = 0  # packets generated while streaming
    packets_dropped: int = 0  # generated but not delivered (no reader, full buffer)
    bytes_dropped: int = 0
    connections: int = 0


@dataclass
class Channel:
    """One ADS1299 channel's settings (CHnSET) and its lead-off switches."""

    power_down: bool = False
    gain_code: int = 6
    input_type: int = 0
    bias: bool = True
    srb2: bool = True
    leadoff_p: bool = False
    leadoff_n: bool = False

    @property
    def gain(self) -> int:
        return GAINS[self.gain_code]

    @property
    def chset(self) -> int:
        return (self.power_down << 7) | (self.gain_code << 4) | (self.srb2 << 3) | self.input_type


def uv_per_count(gain: int) -> float:
    return VREF / FULL_SCALE / gain * 1e6


class Cyton:
    """The board's protocol state machine, without I/O.

    ``daisy``: a Daisy module is fitted (the board then starts in 16-channel
    mode, as the firmware sniffs for it at reset). ``record``: keep the last
    packets' (counter, µV per channel sent) for tests in ``sent``.
    """

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.monotonic, *,
                 participant: Participant | None = None, daisy: bool = False, record: int = 0):
        self.clock = clock
        self.seed = seed
        self.participant = participant or Participant.from_seed(seed)
        self.daisy_fitted = daisy
        self.stats = HeadsetStats()
        self.sent: deque[tuple[int, np.ndarray]] = deque(maxlen=record) if record else deque(maxlen=0)
        self._record = record
        self.commands: dict[int, Callable[[int], bytes]] = {
            ord("v"): self._cmd_soft_reset,
            ord("b"): self._cmd_start,
            ord("s"): self._cmd_stop,
            ord("d"): self._cmd_defaults,
            ord("D"): lambda _b: self._reply(DEFAULT_REPORT),
            ord("?"): self._cmd_registers,
            ord("V"): lambda _b: self._reply(VERSION_REPLY),
            ord("C"): self._cmd_daisy_on,
            ord("c"): self._cmd_daisy_off,
            ord("<"): self._cmd_timestamp_on,
            ord(">"): self._cmd_timestamp_off,
            ord("x"): lambda b: self._begin(b, 8),
            ord("z"): lambda b: self._begin(b, 4),
            ord("~"): lambda b: self._begin(b, 1),
            ord("/"): lambda b: self._begin(b, 1),
            ord("`"): lambda b: self._begin(b, 1),
        }
        for i, key in enumerate(_OFF):
            self.commands[key] = lambda _b, i=i: self._set_power(i, True)
        for i, key in enumerate(_ON):
            self.commands[key] = lambda _b, i=i: self._set_power(i, False)
        for key in _TEST_SIGNALS:
            self.commands[key] = self._cmd_test_signal
        self._multi: bytearray | None = None  # a multi-byte command being collected
        self._multi_need = 0
        self._multi_t = 0.0
        self._t_boot = clock()
        self._reset_state()

    # -- state ----------------------------------------------------------
    def _reset_state(self) -> None:
        self.streaming = False
        self.channels = [Channel() for _ in range(16)]
        self.srb1 = False
        self.daisy = self.daisy_fitted
        self.sample_rate_hz = 250
        self.board_mode = 0
        self.timestamping = False
        self._ts_set = False
        self._marker = 0
        self._test = (0, 0.0)  # (amplitude x, period)
        self._signal = SignalSource(self.participant, self.sample_rate_hz)
        self._t0 = 0.0
        self._sent = 0
        self._last_counts = np.zeros(16, dtype=np.int64)  # the Daisy averages with the previous sample
        self._accel_i = 0

    @property
    def gain(self) -> int:
        """Gain of channel 1 (kept for callers that think of one gain)."""
        return self.channels[0].gain

    @property
    def n_channels(self) -> int:
        return 16 if self.daisy else 8

    @property
    def stream_rate_hz(self) -> float:
        """Samples per second of all channels (packets per second halved with the Daisy)."""
        return self.sample_rate_hz / (2 if self.daisy else 1)

    def _reply(self, text: bytes) -> bytes:
        return b"" if self.streaming else text

    # -- commands -------------------------------------------------------
    def receive(self, data: bytes) -> bytes:
        out = bytearray()
        now = self.clock()
        for byte in data:
            if self._multi is not None:
                if now - self._multi_t > _MULTI_TIMEOUT_S:
                    self._multi = None
                    self.stats.failures += 1
                    out += self._reply(TIMEOUT_REPLY)
                else:
                    self._multi.append(byte)
                    if len(self._multi) >= self._multi_need or (self._multi[0] in b"xz" and byte in b"XZ"):
                        cmd, self._multi = bytes(self._multi), None
                        out += self._finish(cmd)
                    continue
            handler = self.commands.get(byte)
            if handler is None:
                if byte not in b"\r\n ":
                    self.stats.unknown_commands += 1
                continue
            self.stats.commands += 1
            out += handler(byte)
        return bytes(out)

    def _begin(self, byte: int, need: int) -> bytes:
        self._multi = bytearray([byte])
        self._multi_need = need + 1
        self._multi_t = self.clock()
        return b""

    def _finish(self, cmd: bytes) -> bytes:
        key = cmd[0]
        if key == ord("x"):
            return self._channel_settings(cmd)
        if key == ord("z"):
            return self._leadoff(cmd)
        if key == ord("~"):
            return self._sample_rate(cmd[1])
        if key == ord("/"):
            return self._board_mode(cmd[1])
        self._marker = cmd[1]  # "`X"
        return b""

    def _fail(self, text: bytes) -> bytes:
        self.stats.failures += 1
        return self._reply(b"Failure: " + text + b"$$$")

    def _channel_settings(self, cmd: bytes) -> bytes:
        # x CHANNEL POWER_DOWN GAIN_SET INPUT_TYPE_SET BIAS_SET SRB2_SET SRB1_SET X
        if len(cmd) < 9:
            return self._fail(b"too few chars")
        if cmd[8] != ord("X"):
            return self._fail(b"9th char not X")
        ch = _CHANNEL_SELECT.find(cmd[1:2])
        digits = [b - 0x30 for b in cmd[2:8]]
        limits = (1, 6, 7, 1, 1, 1)
        if ch < 0 or (ch >= 8 and not self.daisy) or any(not 0 <= d <= m for d, m in zip(digits, limits)):
            return self._fail(b"Err: too many chars")
        c = self.channels[ch]
        c.power_down, c.gain_code, c.input_type = bool(digits[0]), digits[1], digits[2]
        c.bias, c.srb2 = bool(digits[3]), bool(digits[4])
        self.srb1 = bool(digits[5])
        return self._reply(b"Success: Channel set for %d$$$" % (ch + 1))

    def _leadoff(self, cmd: bytes) -> bytes:
        # z CHANNEL PCHAN NCHAN Z
        if len(cmd) < 5:
            return self._fail(b"too few chars")
        if cmd[4] != ord("Z"):
            return self._fail(b"5th char not Z")
        ch = _CHANNEL_SELECT.find(cmd[1:2])
        p, n = cmd[2] - 0x30, cmd[3] - 0x30
        if ch < 0 or (ch >= 8 and not self.daisy) or p not in (0, 1) or n not in (0, 1):
            return self._fail(b"Err: too many chars")
        self.channels[ch].leadoff_p, self.channels[ch].leadoff_n = bool(p), bool(n)
        return self._reply(b"Success: Lead off set for %d$$$" % (ch + 1))

    def _sample_rate(self, code: int) -> bytes:
        if code == ord("~"):
            return self._reply(b"Sample rate is %dHz$$$" % self.sample_rate_hz)
        rate = SAMPLE_RATES.get(code - 0x30)
        if rate is None:
            return self._fail(b"sample value out of bounds")
        self.sample_rate_hz = rate
        self._signal = SignalSource(self.participant, rate)
        self._restart_clock()
        return self._reply(b"Sample rate set to %dHz$$$" % rate)

    def _board_mode(self, code: int) -> bytes:
        if code == ord("/"):
            return self._reply(b"Board mode is %s$$$" % BOARD_MODES[self.board_mode].encode())
        mode = code - 0x30
        if not 0 <= mode < len(BOARD_MODES):
            return self._fail(b"board mode value out of bounds")
        self.board_mode = mode
        return self._reply(b"Board mode set to %s$$$" % BOARD_MODES[mode].encode())

    def _cmd_soft_reset(self, _b: int) -> bytes:
        self._reset_state()
        return BANNER_DAISY if self.daisy else BANNER

    def _cmd_defaults(self, _b: int) -> bytes:
        self.channels = [Channel() for _ in range(16)]
        self.srb1 = False
        self._test = (0, 0.0)
        return self._reply(DEFAULTS_REPLY)

    def _cmd_start(self, _b: int) -> bytes:
        if not self.streaming:
            self.streaming = True
            self._restart_clock()
        return b""

    def _restart_clock(self) -> None:
        self._t0 = self.clock()
        self._sent = 0

    def _cmd_stop(self, _b: int) -> bytes:
        self.streaming = False
        return b""

    def _cmd_daisy_on(self, _b: int) -> bytes:
        if self.daisy:
            return self._reply(b"16$$$")
        if not self.daisy_fitted:
            return self._reply(b"no daisy to attach!8$$$")
        self.daisy = True
        return self._reply(b"daisy attached16$$$")

    def _cmd_daisy_off(self, _b: int) -> bytes:
        if not self.daisy:
            return b""
        self.daisy = False
        return self._reply(b"daisy removed$$$")

    def _cmd_timestamp_on(self, _b: int) -> bytes:
        self.timestamping = True
        self._ts_set = True
        return self._reply(b"Time stamp ON$$$")

    def _cmd_timestamp_off(self, _b: int) -> bytes:
        self.timestamping = False
        return self._reply(b"Time stamp OFF$$$")

    def _set_power(self, ch: int, down: bool) -> bytes:
        if ch < 16:
            self.channels[ch].power_down = down
        return b""

    def _cmd_test_signal(self, byte: int) -> bytes:
        mux, amp, period = _TEST_SIGNALS[byte]
        for c in self.channels:
            c.power_down = False
            c.input_type = mux
        self._test = (amp, period)
        return self._reply(b"Success: Configured internal test signal.$$$")

    def _cmd_registers(self, _b: int) -> bytes:
        lines = [b"Board ADS Registers"]
        lines += self._ads_registers(self.channels[:8])
        if self.daisy:
            lines += [b"Daisy ADS Registers"]
            lines += self._ads_registers(self.channels[8:])
        lines += [b"LIS3DH Registers", b"0x07.0", b"0x08.0", b"0x1F.0", b"0x20.57", b"0x23.08", b"0x24.0"]
        return self._reply(b"\n".join(lines) + b"\n$$$")

    def _ads_registers(self, chans: list[Channel]) -> list[bytes]:
        dr = {16000: 0, 8000: 1, 4000: 2, 2000: 3, 1000: 4, 500: 5, 250: 6}[self.sample_rate_hz]
        regs = [("ID", 0x3E), ("CONFIG1", 0x90 | dr), ("CONFIG2", 0xC0 | (0x10 if self._test[0] == 2 else 0)
                                                       | (1 if self._test[1] and self._test[1] < 0.6 else 0)),
                ("CONFIG3", 0xEC), ("LOFF", 0x02)]
        regs += [(f"CH{i + 1}SET", c.chset) for i, c in enumerate(chans)]
        regs += [("BIAS_SENSP", sum(c.bias << i for i, c in enumerate(chans))),
                 ("BIAS_SENSN", sum(c.bias << i for i, c in enumerate(chans))),
                 ("LOFF_SENSP", sum(c.leadoff_p << i for i, c in enumerate(chans))),
                 ("LOFF_SENSN", sum(c.leadoff_n << i for i, c in enumerate(chans))),
                 ("LOFF_FLIP", 0), ("LOFF_STATP", 0), ("LOFF_STATN", 0), ("GPIO", 0x0F),
                 ("MISC1", 0x20 if self.srb1 else 0), ("MISC2", 0), ("CONFIG4", 0x02 if any(
                     c.leadoff_p or c.leadoff_n for c in chans) else 0)]
        out = []
        for addr, (name, value) in enumerate(regs):
            bits = ", ".join(str((value >> (7 - k)) & 1) for k in range(8))
            label = "ADS_ID" if name == "ID" else name
            out.append(f"{label}, {addr:02X}, {value:02X}, {bits}".encode())
        return out

    # -- stream ---------------------------------------------------------
    def packets_due(self, now_s: float) -> int:
        if not self.streaming:
            return 0
        due = int((now_s - self._t0) * self.sample_rate_hz) + 1
        return max(0, due - self._sent)

    def physical_uv(self, n: int) -> np.ndarray:
        """The next ``n`` ADC samples in µV at the inputs, 16 channels, as the settings route them."""
        uv = self._signal.take(n).copy()
        k = self._sent + np.arange(n)
        t = k / self.sample_rate_hz
        p = self.participant
        for i, c in enumerate(self.channels):
            if c.input_type == 1 or c.input_type in (2, 6, 7):  # shorted / bias measurement: noise only
                uv[:, i] = np.random.default_rng([self.seed, int(k[0]), i]).normal(0, 0.3, n)
            elif c.input_type == 3:  # MVDD: supply / 2 through the PGA
                uv[:, i] = 1.5e6 / 2
            elif c.input_type == 4:  # temperature sensor, ~145 mV at 25 °C
                uv[:, i] = 145300.0
            elif c.input_type == 5:
                amp, period = self._test
                if period:
                    uv[:, i] = amp * _TEST_AMP_V * 1e6 * np.where((t % period) < period / 2, 1.0, -1.0)
                else:
                    uv[:, i] = amp * _TEST_AMP_V * 1e6
            if c.leadoff_p or c.leadoff_n:
                z = p.impedance_kohm[i] * 1e3 + SERIES_OHM
                if i in p.lead_off:
                    z = 5e6
                uv[:, i] += LEADOFF_CURRENT_A * z * 1e6 * np.sin(2 * np.pi * LEADOFF_HZ * t)
        return uv

    def _counts(self, uv: np.ndarray) -> np.ndarray:
        gains = np.array([c.gain for c in self.channels], dtype=float)
        counts = np.rint(uv / (VREF / FULL_SCALE / gains * 1e6))
        counts = np.clip(counts, -FULL_SCALE - 1, FULL_SCALE).astype(np.int64)
        off = np.array([c.power_down for c in self.channels])
        counts[:, off] = 0
        return counts

    def packets_until(self, now_s: float) -> bytes:
        n = self.packets_due(now_s)
        if n == 0:
            return b""
        uv = self.physical_uv(n)
        counts = self._counts(uv)
        gains = np.array([c.gain for c in self.channels], dtype=float)
        pk = np.zeros((n, PACKET_SIZE), dtype=np.uint8)
        pk[:, 0] = HEADER
        k = self._sent + np.arange(n)
        pk[:, 1] = k & 0xFF
        if self.daisy:
            # average of this and the previous ADC sample; odd counters the board, even the Daisy
            prev = np.vstack([self._last_counts, counts[:-1]])
            avg = ((counts + prev) // 2).astype(np.int64)
            odd = (k & 1).astype(bool)
            chans = np.where(odd[:, None], avg[:, :8], avg[:, 8:])
            sent_uv = chans * np.where(odd[:, None], VREF / FULL_SCALE / gains[:8] * 1e6,
                                       VREF / FULL_SCALE / gains[8:] * 1e6)
        else:
            chans = counts[:, :8]
            sent_uv = chans * (VREF / FULL_SCALE / gains[:8] * 1e6)
        self._last_counts = counts[-1].copy()
        be = (chans & 0xFFFFFF).astype(">u4").view(np.uint8).reshape(n, 8, 4)[:, :, 1:]
        pk[:, 2:26] = be.reshape(n, 24)
        self._aux(pk, k)
        if self._record:
            for i in range(n):
                self.sent.append((int(k[i] & 0xFF), sent_uv[i].copy()))
        self._sent += n
        self.stats.packets += n
        return pk.tobytes()

    def _aux(self, pk: np.ndarray, k: np.ndarray) -> None:
        n = len(pk)
        raw_aux = self.board_mode in (2, 3, 4)
        accel = np.array([0, 0, int(round(1.0 / G_PER_COUNT))], dtype=">i2").view(np.uint8)
        if not self.timestamping:
            if raw_aux:
                if self.board_mode == 2:  # analog: A5, A6, A7 as 10-bit readings
                    pk[:, 26:32] = np.array([512, 256, 0], dtype=">u2").view(np.uint8)
                elif self.board_mode == 4 and self._marker:
                    pk[0, 26] = self._marker
                    self._marker = 0
                pk[:, 32] = 0xC1
            else:
                pk[:, 26:32] = accel
                pk[:, 32] = 0xC0
            return
        ms = ((self.clock() - self._t_boot) * 1000 + (k - k[-1]) * 1000 / self.sample_rate_hz).astype(np.int64)
        pk[:, 28:32] = (ms & 0xFFFFFFFF).astype(">u4").view(np.uint8).reshape(n, 4)
        if raw_aux:
            pk[:, 32] = 0xC6
        else:
            codes = b"XxYyZz"
            for i in range(n):  # the accelerometer interleaved a byte at a time
                j = (self._accel_i + i) % 6
                pk[i, 26] = codes[j]
                pk[i, 27] = accel[j]
            self._accel_i = (self._accel_i + n) % 6
            pk[:, 32] = 0xC4
        if self._ts_set:
            pk[0, 32] -= 1  # C3 / C5: the first packet after '<'
            self._ts_set = False
