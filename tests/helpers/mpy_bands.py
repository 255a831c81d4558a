# Run under micropython: feed int24 samples from a file through the pod's
# SampleRing in 10-sample batches, compute BandPower at the given checkpoints
# and print one JSON line per checkpoint.
# Usage: micropython mpy_bands.py CHANNELS RATE FILE CHECKPOINT...
import json
import sys

from pod import bands, ring

channels = int(sys.argv[1])
rate = int(sys.argv[2])
data = open(sys.argv[3], "rb").read()
checkpoints = [int(a) for a in sys.argv[4:]]
sb = channels * 3
r = ring.SampleRing(channels, rate)
bp = bands.BandPower(r, rate)
total = len(data) // sb
seq = 0
while seq < total:
    k = min(10, total - seq)
    r.put(seq, seq * 4, data[seq * sb : (seq + k) * sb], k * sb)
    seq += k
    if seq in checkpoints:
        bp.compute()
        print(json.dumps({"last_seq": bp.last_seq, "n": bp.n, "window_ms": bp.window_ms, "powers": list(bp.powers)}))
