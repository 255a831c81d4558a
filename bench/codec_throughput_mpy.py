# Runs under micropython (see codec_throughput.py): firmware framing + generated codec.
import time

from pod import framing, wire
import peer_wire  # the host's side of the codec (generated)

CH = 8
N = 10
samples = bytearray(3 * CH * N)
for i in range(len(samples)):
    samples[i] = (i * 7 + 1) & 0xFF
enc = framing.Encoder()
got = [0]


def on_frame(type_, seq, frame, end):
    peer_wire.unpack_eeg_batch(frame, wire.HEADER_SIZE, end)
    got[0] += 1


dec = framing.Decoder(on_frame)
frames = 2000
t0 = time.ticks_us()
for k in range(frames):
    end = wire.pack_eeg_batch(enc.body, wire.HEADER_SIZE, k * N, 0, k, CH, 0, samples)
    enc.encode(wire.T_EEG_BATCH, k, end)
t1 = time.ticks_us()
out = bytes(enc.encode(wire.T_EEG_BATCH, 1, end))
for k in range(frames):
    dec.feed(out, len(out))
t2 = time.ticks_us()
assert got[0] == frames, got[0]
e_us = time.ticks_diff(t1, t0) / frames
d_us = time.ticks_diff(t2, t1) / frames
print("firmware (micropython unix, bytecode): encode %.1f us/frame, decode %.1f us/frame, %d-byte frame" % (e_us, d_us, len(out)))
