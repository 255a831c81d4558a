"""Fuzz the firmware under the real 32-bit micropython interpreter: its frame decoder, and its handlers.

    .venv/bin/python bench/fuzz_firmware.py [N] [SEED]     # N inputs to each, default 100 000

Decoder: bench/mpy/fuzz_decoder.py with firmware/ on MICROPYPATH: mutated encoded
frames, mutated payloads given a valid CRC (so they reach ``wire.UNPACK``,
where pod/link.py catches ValueError and nothing else), and random bytes;
after each, a delimiter and a good frame that must be decoded.

Handlers: tests/helpers/fuzz_link_mpy.py: well-framed frames (valid header
and CRC) whose payloads are valid, mutated or random, for every message type
the pod handles and for types it does not, fed through ``pod.link.Link``
into the handlers app.py registers (scene, night mode, group value,
scene_at, frame_phase, safe mode, EEG replay, connect, ping), with frames
rendered through the governor in between. Checked: nothing raises out of the
link or the render loop; every command is answered once, ACK or NACK; a
payload the host codec (protocol/codec.py, a separate implementation) cannot
decode is NACKed bad_message and one it can is not; no strobe is accepted on
a pod without strobe_enabled; and the frames keep the light-safety limits
(tests/helpers/flash_analyzer.py: flashes, current budget, brightness cap).

Exits non-zero on a crash, a lost resync, a broken rule or a hang (time limit).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
SCRIPT = ROOT / "bench" / "mpy" / "fuzz_decoder.py"

from hypnolum.protocol import codec  # noqa: E402

from helpers import fuzz_link  # noqa: E402


def run(n: int, seed: int = 1, timeout_s: float = 600) -> dict:
    mpy = shutil.which("micropython", path=str(Path(sys.executable).parent)) or shutil.which("micropython")
    if not mpy:
        raise SystemExit("micropython not found: run `make setup`")
    frames = [v["frame"] for v in json.loads((ROOT / "protocol" / "vectors.json").read_text())["vectors"]]
    with tempfile.NamedTemporaryFile("w", suffix=".hex", delete=False) as f:
        f.write("\n".join(frames))
    try:
        env = dict(os.environ, MICROPYPATH=f"{ROOT / 'firmware'}:.frozen")
        out = subprocess.run([mpy, "-X", "heapsize=4M", str(SCRIPT), f.name, str(n), str(seed)], env=env,
                             capture_output=True, text=True, timeout=timeout_s)
    finally:
        os.unlink(f.name)
    if out.returncode:
        return {"crashes": 1, "died": out.stderr[-2000:] or out.stdout[-2000:]}
    words = out.stdout.split("\n")[0].split()
    stats = {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}
    stats["first_failure"] = next((line for line in out.stdout.splitlines() if line.startswith("first_failure")), None)
    return stats


def decoder(n: int, seed: int) -> int:
    try:
        s = run(n, seed)
    except subprocess.TimeoutExpired:
        print("firmware decoder fuzz: HANG (time limit)")
        return 1
    if "died" in s:
        print(f"firmware decoder fuzz: the interpreter died: {s['died']}")
        return 1
    print(f"firmware decoder fuzz (micropython): {s['frames']} bad inputs (+ {s['frames']} good frames) "
          f"in {s['ms'] / 1000:.1f} s, seed {seed}")
    print(f"  crashes {s['crashes']}, lost resyncs {s['lost_resync']}; payloads unpacked {s['unpacked']}, "
          f"refused with ValueError {s['value_errors']}; decoder errors counted {s['decoder_errors']}")
    if s["first_failure"]:
        print(f"  {s['first_failure']}")
    return 1 if s["crashes"] or s["lost_resync"] else 0


def handlers(n: int, seed: int) -> int:
    t0 = time.monotonic()
    try:
        r = fuzz_link.run(n, seed)
    except subprocess.TimeoutExpired:
        print("firmware handler fuzz: HANG (time limit)")
        return 1
    names = ", ".join(f"{codec.BY_TYPE[t].name} {r.per_type[str(t)]}" for t in r.handlers)
    print(f"firmware handler fuzz (micropython, through Link): {r.messages} well-framed messages in "
          f"{time.monotonic() - t0:.1f} s, seed {seed}")
    print(f"  per handler: {names}; unhandled types {r.per_type['unhandled']}")
    print(f"  {r.frames} frames rendered ({r.seconds_rendered:.0f} s of pod time), {r.replays} replays sent")
    print(f"  crashes {r.crash_count}, broken answer rules {r.violation_count}, "
          f"answers the host codec disagrees with {r.disagreement_count}, light-safety limits broken {len(r.light)}")
    for text in r.crashes + r.violations + r.disagreements + r.light:
        print("  " + text.replace("\n", "\n    "))
    return 1 if r.failures else 0


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    return decoder(n, seed) | handlers(n, seed)


if __name__ == "__main__":
    sys.exit(main())
