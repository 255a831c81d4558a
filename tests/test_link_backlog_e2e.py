"""The pod link when the host stops reading: the real firmware, its USB CDC code over
the emulator's USBDevice stand-in, and a pty reader that pauses (docs/emulator.md,
"The pod link").

A paused reader must hold the pod's IN transfer pending, so the pod's own TX ring
fills and link.py drops telemetry (counted: STATUS eeg_dropped) while a command
sent meanwhile is still answered; nothing is lost in the emulator, the pod's memory
stays bounded, and telemetry flows again once the host reads.
"""
import asyncio

import pytest

from hypnolum.emulator.runner import Emulator
from hypnolum.protocol import codec

from helpers.pty_host import PtyHost

pytestmark = pytest.mark.micropython

HEAP_FLOOR = 65536  # firmware/pod/budget.py


Host = PtyHost


async def test_paused_reader_makes_the_pod_drop_telemetry_not_answers(tmp_path):
    async with Emulator(1, tmp_path / "emu", seed=5) as emu:
        await emu.wait_links(15)
        pod = emu.pods[0]
        host = PtyHost(pod.tty_path)
        try:
            host.send("connect", {"protocol_version": codec.PROTOCOL_VERSION, "fingerprint": codec.FINGERPRINT,
                                  "host_id": "test"})
            await host.wait_for(lambda f: f.name == "hello", what="HELLO")
            before = await host.wait_for(lambda f: f.name == "status", what="STATUS")
            await host.wait_for(lambda f: f.name == "eeg_batch", what="EEG_BATCH")
            assert before.fields["eeg_dropped"] == 0

            # the host stops reading: the pty fills, then link.sock, then the pod's ring
            await asyncio.sleep(3.0)
            nonce = 0x5EED
            host.send("ping", {"nonce": nonce, "host_time_us": 42})
            await asyncio.sleep(1.0)
            assert pod.counters.link_dropped_bytes == 0  # held back in the pod, not lost in between

            mark = len(host.frames)
            pong = await host.wait_for(lambda f: f.name == "pong" and f.fields["nonce"] == nonce, what="PONG",
                                       start=mark)
            assert pong.fields["host_time_us"] == 42
            dropped = await host.wait_for(lambda f: f.name == "status" and f.fields["eeg_dropped"] > 0,
                                          what="STATUS with telemetry dropped", start=mark)
            assert dropped.fields["mem_free"] >= HEAP_FLOOR

            # reading again: live EEG resumes and nothing more is dropped
            i = host.frames.index(dropped) + 1
            s1 = await host.wait_for(lambda f: f.name == "status", what="STATUS", start=i, timeout=5)
            j = host.frames.index(s1) + 1
            await host.wait_for(lambda f: f.name == "eeg_batch", what="EEG_BATCH after resuming", start=j)
            s2 = await host.wait_for(lambda f: f.name == "status", what="STATUS", start=j, timeout=5)
            assert s2.fields["eeg_dropped"] == s1.fields["eeg_dropped"]
            assert s2.fields["mem_free"] >= HEAP_FLOOR
            assert not host.decoder.errors  # every byte arrived, in order
            assert (pod.counters.crashes, pod.counters.watchdog_resets) == (0, 0), pod.tail()
        finally:
            host.port.close()
