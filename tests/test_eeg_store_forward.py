"""Store and forward end to end: the real firmware, the virtual headset, the link on a pty.

The pod's port is unplugged for 1 s while the headset keeps streaming; a
protocol-level client (hypnolum.emulator.eeg_client) reopens the port, sees
the jump in first_seq, asks EEG_REPLAY for the missing range, and must end up
with every sample: 0 lost, replayed bytes flagged REPLAY.
"""
from __future__ import annotations

import asyncio

import numpy as np

import pytest

from hypnolum.emulator.cyton_protocol import uv_per_count
from hypnolum.emulator.eeg_client import EegClient
from hypnolum.emulator.runner import Emulator

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("channels", [8, 16])
async def test_one_second_unplug_loses_no_samples(tmp_path, channels):
    async with Emulator(1, tmp_path, seed=3, eeg_channels=channels) as emu:
        await emu.wait_links(15)
        pod = emu.pods[0]
        client = EegClient(pod.tty_path, keep_samples=True)
        await client.start()
        try:
            rate = 125 if channels == 16 else 250
            await client.wait_for(lambda: client.stats.samples_live > rate, 20)
            assert client.channels == channels
            pod.unplug()
            await asyncio.sleep(1.0)
            pod.replug()
            await client.wait_for(lambda: client.stats.gaps_seen >= 1, 10)
            gap_end = client.next_expected
            await client.wait_for(lambda: client.lost(gap_end) == 0, 10)
            await client.wait_for(lambda: client.stats.bands >= 4, 5)  # band powers flow too
        finally:
            await client.stop()
        st = client.stats
        assert st.samples_replayed >= rate * 0.9, st  # about a second's worth came back
        assert st.replay_batches > 0 and st.acks >= 1 and st.nacks == [], st
        assert st.mismatches == 0
        assert client.lost(gap_end) == 0
        assert pod.counters.link_dropped_bytes > 0  # the unplug really lost live frames
        bands = client.last_bands
        assert bands["channels"] == channels and len(bands["powers"]) == channels * 5
        assert bands["window_ms"] == 1024


async def test_replay_of_a_range_the_ring_no_longer_holds_is_refused(tmp_path):
    async with Emulator(1, tmp_path, seed=4) as emu:
        await emu.wait_links(15)
        client = EegClient(emu.pods[0].tty_path, ask_replay=False)
        await client.start()
        try:
            await client.wait_for(lambda: client.stats.samples_live > 1300, 20)  # > 5 s: the ring has wrapped
            client._ask(client.first, 10)
            await client.wait_for(lambda: client.stats.nacks, 5)
            assert client.stats.nacks == ["unavailable"]
            newest = client.next_expected - 1
            client._ask(newest - 100, 50)
            await client.wait_for(lambda: client.stats.acks == 1, 5)
            await client.wait_for(lambda: client.stats.samples_replayed == 0 and client.stats.duplicates >= 50, 5)
        finally:
            await client.stop()


async def test_sixteen_channels_without_a_daisy_are_refused_with_the_reason(tmp_path):
    from hypnolum.emulator.headset import VirtualHeadset

    async with Emulator(1, tmp_path, seed=5, eeg_channels=16) as emu:
        pod = emu.pods[0]
        await emu.wait_links(15)
        client = EegClient(pod.tty_path)
        await client.start()
        try:
            # the board answers C with "no daisy to attach!8$$$": swap in one without its Daisy
            await pod.headset.stop()
            pod.headset = VirtualHeadset(seed=5, daisy=False)
            pod.headset.start()
            await client.wait_for(lambda: any("no Daisy" in text for _lvl, text in client.logs), 15)
        finally:
            await client.stop()
        text = next(t for _lvl, t in client.logs if "no Daisy" in t)
        assert "no daisy to attach!8$$$" in text  # the board's own answer, passed on


async def test_eight_channel_pod_detaches_a_fitted_daisy(tmp_path):
    from hypnolum.emulator.headset import VirtualHeadset

    async with Emulator(1, tmp_path, seed=6, eeg_channels=8) as emu:
        pod = emu.pods[0]
        await pod.headset.stop()
        pod.headset = VirtualHeadset(seed=6, daisy=True, record=2000)  # boots in 16-channel mode
        pod.headset.start()
        await emu.wait_links(15)
        client = EegClient(pod.tty_path, keep_samples=True)
        await client.start()
        try:
            await client.wait_for(lambda: client.stats.samples_live > 300, 20)
        finally:
            await client.stop()
        assert not pod.headset.cyton.daisy  # the pod sent 'c'
        assert client.channels == 8 and client.lost() == 0
        # the pod's samples are the board's packets, byte for byte
        sent = {}
        for counter, uv in pod.headset.cyton.sent:
            sent.setdefault(counter, []).append(np.rint(uv / uv_per_count(24)).astype(np.int64))
        seq = client.next_expected - 1
        raw = np.frombuffer(client.samples[seq], np.uint8).reshape(8, 3).astype(np.int64)
        counts = (raw[:, 0] << 16) | (raw[:, 1] << 8) | raw[:, 2]
        counts = np.where(counts & 0x800000, counts - (1 << 24), counts)
        assert any((c == counts).all() for c in sent[seq & 0xFF])
