"""Fuzz the firmware's frame decoder under the real micropython interpreter.

    .venv/bin/python bench/fuzz_firmware.py [N] [SEED]     # N frames, default 100 000

Runs bench/mpy/fuzz_decoder.py with firmware/ on MICROPYPATH: mutated encoded
frames, mutated payloads given a valid CRC (so they reach ``wire.UNPACK``,
where pod/link.py catches ValueError and nothing else), and random bytes;
after each, a delimiter and a good frame that must be decoded. Exits non-zero
on a crash (any other exception), a lost resync, or a hang (time limit).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "mpy" / "fuzz_decoder.py"


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


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
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


if __name__ == "__main__":
    sys.exit(main())
