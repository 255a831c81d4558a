"""Group EEG of a circle (host/group_eeg.py) from raw EEG payloads as hostd publishes them."""
import numpy as np
import pytest

from hypnolum.host.group_eeg import STALE_S, EegPayloadError, PodSignal, group_features, phase_locking
from hypnolum.host.state import SCALE_UV

RATE = 250
T0 = 1_795_786_800.0


def payload(seq: int, n: int = 5, amp_uv: float = 20.0, hz: float = 10.0, phase: float = 0.0,
            channels: int = 2, gap: bool = False, delay_s: float = 0.004) -> dict:
    """A batch of a 10 Hz wave (all channels), stamped as if received delay_s after its last sample."""
    t = T0 + (seq + np.arange(n)) / RATE
    uv = amp_uv * np.cos(2 * np.pi * hz * t + phase)
    counts = np.rint(np.repeat(uv[:, None], channels, axis=1) / SCALE_UV).astype(int)
    return {"seq": seq, "n": n, "channels": channels, "rate_hz": RATE, "t_pod_ms": seq * 4,
            "t_host": round(t[-1] + delay_s, 3), "gap": gap, "scale_uv": SCALE_UV, "samples": counts.tolist()}


def joined(batches: list[dict]) -> dict:
    """Batches gathered into one message, as a host publishing at an interval sends them."""
    msg = dict(batches[0], n=sum(b["n"] for b in batches), samples=sum((b["samples"] for b in batches), []))
    msg["t_host_last"] = batches[-1]["t_host"]
    return msg


def feed(sig: PodSignal, first: int, count: int, **kw) -> None:
    for seq in range(first, first + count, 5):
        sig.add(payload(seq, **kw))


def test_group_alpha_power_is_the_mean_of_the_pods_tracked_power():
    a, b = PodSignal(), PodSignal()
    feed(a, 0, RATE, amp_uv=20.0)
    feed(b, 0, RATE, amp_uv=40.0)
    f = group_features({"a": a, "b": b}, plv=None)
    assert f.pods == 2
    assert f.alpha_power_uv2 == pytest.approx((20.0**2 / 2 + 40.0**2 / 2) / 2, rel=0.06)
    assert f.t_end == pytest.approx(T0 + (RATE - 1) / RATE, abs=0.01)


def test_new_eeg_moves_the_group_power_at_once():
    a = PodSignal()
    feed(a, 0, RATE, amp_uv=2.0)
    before = group_features({"a": a}, None).alpha_power_uv2
    a.add(payload(RATE, amp_uv=200.0))  # one 20 ms batch of a strong wave
    assert group_features({"a": a}, None).alpha_power_uv2 > 5 * before


def test_a_gap_restarts_the_pods_tracker_and_it_waits_to_settle():
    a, b = PodSignal(), PodSignal()
    feed(a, 0, RATE, amp_uv=20.0)
    feed(b, 0, RATE, amp_uv=20.0)
    b.add(payload(RATE + 50, gap=True))  # samples lost before this batch: a new run
    assert b.alpha.samples == 5
    f = group_features({"a": a, "b": b}, None)
    assert f.pods == 1  # b's tracker is starting again, not dragging the mean down
    assert f.alpha_power_uv2 == pytest.approx(20.0**2 / 2, rel=0.06)
    feed(b, RATE + 55, RATE // 2)
    assert group_features({"a": a, "b": b}, None).pods == 2


def test_a_lost_message_restarts_the_tracker_and_a_repeat_is_not_counted_twice():
    a = PodSignal()
    feed(a, 0, 100)
    a.add(payload(105))  # 100..104 never came
    assert a.holes == 1 and a.alpha.samples == 5
    batches, samples = a.batches, a.alpha.samples
    a.add(payload(105))  # the same message again
    assert (a.batches, a.alpha.samples) == (batches, samples)


def test_a_stale_pod_is_left_out():
    a, b = PodSignal(), PodSignal()
    feed(a, 0, RATE * 4, amp_uv=20.0)
    feed(b, 0, RATE, amp_uv=80.0)  # b stopped 3 s ago
    assert 3.0 > STALE_S
    f = group_features({"a": a, "b": b}, None)
    assert f.pods == 1 and f.alpha_power_uv2 == pytest.approx(200.0, rel=0.06)


def test_plv_is_windowed_and_pairwise():
    a, b, c = PodSignal(), PodSignal(), PodSignal()
    feed(a, 0, 2 * RATE, phase=0.0)
    feed(b, 0, 2 * RATE, phase=1.0)  # locked, with a constant lag
    feed(c, 0, 2 * RATE, hz=10.7)  # drifting against both
    assert phase_locking({"a": a, "b": b}, 1.0) == pytest.approx(1.0, abs=0.02)
    assert phase_locking({"a": a, "c": c}, 1.0) < 0.5
    assert phase_locking({"a": a}, 1.0) is None


@pytest.mark.parametrize("bad", [
    {"n": 7},
    {"samples": [[1, 2]] * 4 + [["x", 1]]},
    {"samples": [[1, 2]] * 4 + [[float("nan"), 1]]},
    {"rate_hz": 0},
    {"t_host": None},
])
def test_bad_batches_are_refused_and_change_nothing(bad):
    a = PodSignal()
    feed(a, 0, 50)
    before = (a.batches, a.alpha.samples, a.alpha.analytic)
    with pytest.raises(EegPayloadError):
        a.add({**payload(50), **bad})
    assert (a.batches, a.alpha.samples, a.alpha.analytic) == before


def test_messages_of_several_batches_land_on_the_same_time_base_as_single_batches():
    """One host publishes each batch, another every 0.5 s: the same samples, the same instants."""
    each, gathered = PodSignal(), PodSignal()
    for seq in range(0, 4 * RATE, 5):
        each.add(payload(seq))
    for first in range(0, 4 * RATE, 125):
        gathered.add(joined([payload(seq) for seq in range(first, first + 125, 5)]))
    assert gathered.span == pytest.approx(each.span, abs=0.002)
    grid = np.linspace(*each.span, 500)
    assert np.allclose(gathered.on_grid(grid), each.on_grid(grid), atol=0.5)  # µV: one wave, in step
