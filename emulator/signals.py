"""Synthetic EEG per participant, deterministic from a seed.

:class:`Participant` describes one sleeper: alpha frequency and strength,
theta, the mains frequency of the room, how often they blink, how often an
electrode pops, which channels rail or have come off, the electrode
impedances, and the sleep-stage script. :meth:`Participant.from_seed` draws
all of that from a seed, so every emulated pod has its own person.

:class:`SignalSource` turns a participant into microvolts, 16 channels (the
Cyton + Daisy montage below) at the board's sample rate, a block of
:data:`BLOCK` samples at a time. Everything random is drawn from one
``numpy`` generator in block order, so the same seed gives the same
microvolts, sample for sample.

What is in the signal, and where (weights per channel in ``_MONTAGE``):

* background: 1/f-like noise (AR(1)) plus white amplifier noise;
* alpha (8–12 Hz) in waxing and waning bursts, strongest occipitally, while awake;
* theta (4–7 Hz), growing from N1 on, and the REM sawtooth waves;
* sleep stages from the script, default wake → N1 → N2 → REM, repeating:
  N2 brings spindles (12–14 Hz, 0.5–1.5 s, central) and K-complexes (a sharp
  negative wave then a slower positive one, frontal), plus some delta;
* eye blinks while awake (frontal, ~150 µV, 300 ms) and rapid eye
  movements in REM (frontal steps);
* mains interference at 50 or 60 Hz;
* electrode pops: a step that decays over ~0.5 s on a random channel;
* a railed channel (pinned beyond full scale) and a lead-off channel (large
  drift and mains pick-up, an electrode hanging in the air).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

BLOCK = 256
CHANNELS = 16
# The Ultracortex 16-channel placement OpenBCI ships as its default montage.
LABELS = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2", "F7", "F8", "F3", "F4", "T7", "T8", "P3", "P4")

STAGES = ("wake", "N1", "N2", "REM")
DEFAULT_SCRIPT = (("wake", 60.0), ("N1", 60.0), ("N2", 120.0), ("REM", 60.0))


def _weights(**named: float) -> np.ndarray:
    w = np.array([named.get(lbl, 0.0) for lbl in LABELS])
    return w


_DEFAULT = 0.3
_ALPHA_W = _weights(O1=1.0, O2=1.0, P7=0.8, P8=0.8, P3=0.8, P4=0.8, C3=0.4, C4=0.4, T7=0.4, T8=0.4,
                    F3=0.25, F4=0.25, F7=0.2, F8=0.2, Fp1=0.15, Fp2=0.15)
_THETA_W = _weights(F3=1.0, F4=1.0, C3=0.9, C4=0.9, Fp1=0.6, Fp2=0.6, F7=0.7, F8=0.7, T7=0.7, T8=0.7,
                    P3=0.8, P4=0.8, P7=0.6, P8=0.6, O1=0.5, O2=0.5)
_SPINDLE_W = _weights(C3=1.0, C4=1.0, F3=0.7, F4=0.7, P3=0.7, P4=0.7, T7=0.4, T8=0.4, F7=0.4, F8=0.4,
                      Fp1=0.3, Fp2=0.3, P7=0.4, P8=0.4, O1=0.3, O2=0.3)
_KCOMPLEX_W = _weights(F3=1.0, F4=1.0, Fp1=0.8, Fp2=0.8, F7=0.8, F8=0.8, C3=0.9, C4=0.9, T7=0.5, T8=0.5,
                       P3=0.6, P4=0.6, P7=0.4, P8=0.4, O1=0.3, O2=0.3)
_EYE_W = _weights(Fp1=1.0, Fp2=1.0, F7=0.45, F8=0.45, F3=0.35, F4=0.35, C3=0.1, C4=0.1)


@dataclass(frozen=True)
class Participant:
    """One sleeper. Amplitudes in µV (peak), rates per minute, impedances in kΩ."""

    seed: int = 0
    alpha_hz: float = 10.0
    alpha_uv: float = 20.0
    alpha_burst_s: float = 4.0  # period of the waxing and waning
    theta_hz: float = 6.0
    theta_uv: float = 6.0
    background_uv: float = 6.0  # 1/f-like
    noise_uv: float = 1.0  # white amplifier noise, rms
    line_hz: float = 50.0
    line_uv: float = 2.0
    blinks_per_min: float = 12.0
    blink_uv: float = 150.0
    spindles_per_min: float = 6.0
    spindle_uv: float = 25.0
    kcomplexes_per_min: float = 1.5
    kcomplex_uv: float = 100.0
    pops_per_min: float = 0.0
    pop_uv: float = 400.0
    railed: tuple[int, ...] = ()  # channel indices (0-based) pinned beyond full scale
    lead_off: tuple[int, ...] = ()  # channel indices whose electrode is off
    impedance_kohm: tuple[float, ...] = field(default_factory=lambda: (10.0,) * CHANNELS)
    script: tuple[tuple[str, float], ...] = DEFAULT_SCRIPT  # (stage, seconds), repeated
    loop_script: bool = True

    def __post_init__(self):
        for stage, seconds in self.script:
            if stage not in STAGES:
                raise ValueError(f"sleep script: unknown stage {stage!r} (known: {', '.join(STAGES)})")
            if seconds <= 0:
                raise ValueError(f"sleep script: stage {stage!r} lasts {seconds} s; must be > 0")
        if not self.script:
            raise ValueError("sleep script is empty")
        for ch in (*self.railed, *self.lead_off):
            if not 0 <= ch < CHANNELS:
                raise ValueError(f"channel index {ch} outside 0..{CHANNELS - 1}")
        if len(self.impedance_kohm) != CHANNELS:
            raise ValueError(f"impedance_kohm needs {CHANNELS} values, got {len(self.impedance_kohm)}")

    @classmethod
    def from_seed(cls, seed: int, **overrides) -> Participant:
        """A plausible person drawn from ``seed``; keyword arguments override any field."""
        rng = np.random.default_rng([seed, 0x5EED])
        p = cls(
            seed=seed,
            alpha_hz=float(rng.uniform(8.5, 11.5)),
            alpha_uv=float(rng.uniform(12, 30)),
            alpha_burst_s=float(rng.uniform(3, 7)),
            theta_hz=float(rng.uniform(5, 7)),
            theta_uv=float(rng.uniform(4, 9)),
            background_uv=float(rng.uniform(4, 8)),
            blinks_per_min=float(rng.uniform(8, 20)),
            impedance_kohm=tuple(float(z) for z in rng.uniform(4, 25, CHANNELS)),
        )
        return replace(p, **overrides)

    @property
    def script_s(self) -> float:
        return sum(s for _, s in self.script)

    def stage_at(self, t_s: float) -> str:
        """The scripted stage at ``t_s`` seconds after the stream started."""
        total = self.script_s
        if self.loop_script:
            t_s %= total
        for stage, seconds in self.script:
            if t_s < seconds:
                return stage
            t_s -= seconds
        return self.script[-1][0]


# how strong each rhythm is in each stage (times the participant's amplitude)
_STAGE_GAINS = {
    #        alpha theta delta spindles kcomplex blinks rem_eyes sawtooth
    "wake": (1.0, 0.3, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0),
    "N1": (0.25, 1.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0),
    "N2": (0.1, 1.2, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0),
    "REM": (0.2, 1.0, 0.2, 0.0, 0.0, 0.0, 1.0, 1.0),
}


class SignalSource:
    """µV for every channel at ``sample_rate_hz``, deterministic for a participant."""

    def __init__(self, participant: Participant, sample_rate_hz: int = 250, channels: int = CHANNELS):
        self.p = participant
        self.fs = float(sample_rate_hz)
        self.channels = channels
        self._rng = np.random.default_rng([participant.seed, int(sample_rate_hz)])
        self._n = 0  # samples generated
        self._ar = np.zeros(CHANNELS)
        self._pending = np.zeros((0, CHANNELS))  # event tails running into the next block
        self._buf = np.zeros((0, channels))
        self._stage_phase = self._rng.uniform(0, 2 * np.pi, CHANNELS)
        self._drift_phase = self._rng.uniform(0, 2 * np.pi, CHANNELS)
        self.events: list[tuple[int, str, int]] = []  # (sample, kind, channel or -1), bounded

    @property
    def samples_generated(self) -> int:
        return self._n

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` samples as an ``(n, channels)`` float array of µV."""
        while len(self._buf) < n:
            self._buf = np.concatenate([self._buf, self._block()[:, : self.channels]])
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    # -- one block -------------------------------------------------------
    def _block(self) -> np.ndarray:
        p, fs, rng = self.p, self.fs, self._rng
        n0 = self._n
        idx = n0 + np.arange(BLOCK)
        t = idx / fs
        gains = np.array([_STAGE_GAINS[p.stage_at(ti)] for ti in t[:: max(1, BLOCK // 8)]])
        g = np.repeat(gains, max(1, BLOCK // 8), axis=0)[:BLOCK]  # stage gains per sample
        out = np.zeros((BLOCK, CHANNELS))

        # background: AR(1) per channel (1/f-like) and white noise
        white = rng.normal(0.0, 1.0, (BLOCK, CHANNELS))
        a = 0.97
        ar = np.empty((BLOCK, CHANNELS))
        prev = self._ar
        scale = p.background_uv * np.sqrt(1 - a * a)
        for i in range(BLOCK):
            prev = a * prev + scale * white[i]
            ar[i] = prev
        self._ar = prev
        out += ar + rng.normal(0.0, p.noise_uv, (BLOCK, CHANNELS))

        # alpha in bursts; theta; delta
        env = np.sin(np.pi * t / p.alpha_burst_s) ** 2
        alpha = p.alpha_uv * env * np.sin(2 * np.pi * p.alpha_hz * t)
        out += (g[:, 0] * alpha)[:, None] * _ALPHA_W
        theta = p.theta_uv * np.sin(2 * np.pi * p.theta_hz * t[:, None] + self._stage_phase)
        out += g[:, 1][:, None] * theta * _THETA_W
        delta = 2.5 * p.theta_uv * np.sin(2 * np.pi * 1.5 * t[:, None] + self._stage_phase * 0.7)
        out += g[:, 2][:, None] * delta * _KCOMPLEX_W
        saw = 2 * ((t * 3.0) % 1.0) - 1  # 3 Hz sawtooth waves of REM
        out += (g[:, 7] * p.theta_uv * saw)[:, None] * _THETA_W

        # events start inside this block, with tails carried into the next
        tail = np.zeros((BLOCK * 8, CHANNELS))
        tail[: len(self._pending)] += self._pending
        self._events(rng, g, n0, tail)
        out += tail[:BLOCK]
        self._pending = tail[BLOCK:][: int(np.max(np.nonzero(tail[BLOCK:].any(axis=1))[0], initial=-1)) + 1]

        # mains
        out += p.line_uv * np.sin(2 * np.pi * p.line_hz * t)[:, None]

        # lead-off: the electrode hangs in the air, drifting and picking up mains
        for ch in p.lead_off:
            out[:, ch] += 40000 * np.sin(2 * np.pi * 0.05 * t + self._drift_phase[ch]) + 3000 * np.sin(
                2 * np.pi * p.line_hz * t
            )
        for ch in p.railed:
            out[:, ch] = 1e7  # beyond any full scale: the ADC clips at its rail
        self._n += BLOCK
        return out

    def _events(self, rng, g, n0: int, tail: np.ndarray) -> None:
        p, fs = self.p, self.fs
        per_sample = 1.0 / (60.0 * fs)

        def starts(rate_per_min, gain):
            hits = rng.random(BLOCK) < rate_per_min * per_sample * gain
            return np.nonzero(hits)[0]

        limit = len(tail)

        def add(i, wave, weights):
            m = min(len(wave), limit - i)
            tail[i : i + m] += wave[:m, None] * weights

        for i in starts(p.blinks_per_min, g[:, 5]):
            w = np.arange(int(0.3 * fs)) / (0.3 * fs)
            add(i, p.blink_uv * np.sin(np.pi * w) ** 2, _EYE_W)
            self._note(n0 + i, "blink", -1)
        for i in starts(30.0, g[:, 6]):  # rapid eye movements: a step held ~0.4 s
            w = np.arange(int(0.4 * fs))
            step = rng.choice([-1.0, 1.0]) * 60.0 * (1 - np.exp(-w / (0.02 * fs))) * np.exp(-w / (0.3 * fs))
            add(i, step, _EYE_W * np.where(np.arange(CHANNELS) % 2 == 0, 1.0, -1.0))
            self._note(n0 + i, "rem", -1)
        for i in starts(p.spindles_per_min, g[:, 3]):
            dur = rng.uniform(0.5, 1.5)
            w = np.arange(int(dur * fs)) / fs
            f = rng.uniform(12, 14)
            add(i, p.spindle_uv * np.sin(np.pi * w / dur) ** 2 * np.sin(2 * np.pi * f * w), _SPINDLE_W)
            self._note(n0 + i, "spindle", -1)
        for i in starts(p.kcomplexes_per_min, g[:, 4]):
            w = np.arange(int(1.0 * fs)) / fs
            k = -p.kcomplex_uv * np.exp(-(((w - 0.2) / 0.07) ** 2)) + 0.5 * p.kcomplex_uv * np.exp(
                -(((w - 0.55) / 0.15) ** 2)
            )
            add(i, k, _KCOMPLEX_W)
            self._note(n0 + i, "kcomplex", -1)
        if p.pops_per_min:
            for i in starts(p.pops_per_min, np.ones(BLOCK)):
                ch = int(rng.integers(0, CHANNELS))
                w = np.arange(int(0.6 * fs))
                one = np.zeros(CHANNELS)
                one[ch] = 1.0
                add(i, p.pop_uv * np.exp(-w / (0.12 * fs)), one)
                self._note(n0 + i, "pop", ch)

    def _note(self, sample: int, kind: str, ch: int) -> None:
        if len(self.events) >= 10000:
            del self.events[:5000]
        self.events.append((sample, kind, ch))
