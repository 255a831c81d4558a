"""Power cuts during an update, on the emulated pod's file-backed flash (docs/update.md).

A pod's filesystem is a directory laid out as the flash tool leaves a board
(boot.py, main.py, slot ``a/`` with the old build, ``slots.json``,
``update.key``). Each boot is the real 32-bit interpreter running the real
boot.py (slot choice) and firmware (pod/update.py) from that directory, at
the firmware's heap budget, with the HAL shim's power cut armed
(``HYPNOLUM_POWER_CUT``, emulator/mpy/hal.py): at the K-th change to the
filesystem it writes a random prefix of that write and the interpreter is
killed.

One trial: boot and update (begin, every chunk in a shuffled order with
repeats, commit), then boot and confirm; the power goes at change K, counted
across both boots. Then the pod boots once more, without a cut, and that boot
must run a whole slot: its files byte for byte those of the old build or the
new, nothing missing, nothing extra, and the firmware's own build hash
(pod/build.py) one of the two. Anything else is a brick. A recovery boot
then resumes the update without a cut and must end on the new build.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypnolum import paths
from hypnolum.flash import bundle, manifest, upload

from . import image
from .pod import find_micropython, interpreter_env

CHUNK = 512  # bytes per write(): a multiple of the store's block
_DRIVER = r'''
import sys
import boot  # the slot choice, as at every reset
import hal
from pod import build, update

mode = sys.argv[1]
data_dir = sys.argv[2]
seed = int(sys.argv[3])


def read(name):
    with open(data_dir + "/" + name, "rb") as f:
        return f.read()


store = update.Store(update.load_key())
if mode == "update":
    import binascii
    import random
    man = read("manifest.bin")
    rc = store.begin(man, read("tag.bin"))
    if rc:
        raise SystemExit("begin: %%d" %% rc)
    f = open(data_dir + "/payload.bin", "rb")
    size = f.seek(0, 2)
    buf = bytearray(%(chunk)d)
    view = memoryview(buf)
    offs = list(range(0, size, %(chunk)d))
    random.seed(seed)
    for i in range(len(offs) - 1, 0, -1):  # shuffled, and a few sent twice
        j = random.getrandbits(16) %% (i + 1)
        offs[i], offs[j] = offs[j], offs[i]
    offs += offs[:3]
    for off in offs:
        f.seek(off)
        n = f.readinto(buf)
        rc = store.write(off, buf, binascii.crc32(view[:n]), 0, n)
        if rc:
            raise SystemExit("write %%d: %%d" %% (off, rc))
    rc = store.commit()
    if rc:
        raise SystemExit("commit: %%d" %% rc)
elif mode == "confirm":
    if store.trial:
        rc = store.confirm()
        if rc:
            raise SystemExit("confirm: %%d" %% rc)
print("@@", store.active, build.compute(), hal._changes, int(store.safe), int(hal.safe_mode()),
      int(store.rolled_back))
''' % {"chunk": CHUNK}


@dataclass
class Outcome:
    cuts: int = 0
    bricks: int = 0
    old_boots: int = 0  # after the cut, the pod ran the old build
    new_boots: int = 0
    recovered: int = 0  # resumed after the cut and ended on the new build
    failures: list[str] = field(default_factory=list)


class Rig:
    """An old and a new build, a provisioned filesystem template, and the interpreter to boot them."""

    def __init__(self, workdir: Path, heapsize: str | None = None):
        self.dir = Path(workdir)
        self.key = bytes(range(32))
        self.heapsize = heapsize or str(image.heap_budget())
        self.old = bundle.build(paths.FIRMWARE, "x86")
        self.new = bundle.build(self._new_firmware(), "x86")
        self.shim = image.build([paths.EMULATOR_SHIMS])[0]
        self.data = self.dir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        man = manifest.encode(self.new)
        (self.data / "manifest.bin").write_bytes(man)
        (self.data / "tag.bin").write_bytes(manifest.tag(self.key, man))
        (self.data / "payload.bin").write_bytes(manifest.payload(self.new))
        self.driver = self.data / "driver.py"
        self.driver.write_text(_DRIVER)
        self.template = self.dir / "template"
        for f in self.old.files:
            (self.template / f.path).parent.mkdir(parents=True, exist_ok=True)
            (self.template / f.path).write_bytes(f.data)
        (self.template / upload.STATE_FILE).write_bytes(upload.FIRST_STATE)
        (self.template / "update.key").write_bytes(self.key)
        self.micropython = find_micropython()

    def _new_firmware(self) -> Path:
        # the next build: a module changed, one added
        fw = self.dir / "firmware-new"
        if fw.exists():
            shutil.rmtree(fw)
        shutil.copytree(paths.FIRMWARE, fw, ignore=shutil.ignore_patterns("__pycache__"))
        status = fw / "pod" / "status.py"
        status.write_text(status.read_text() + "\n_NEXT_BUILD = 1\n")
        (fw / "pod" / "added.py").write_text('"""A module only the new build has."""\nVALUE = 2\n')
        return fw

    def boot(self, fs: Path, mode: str, cut: int = 0, seed: int = 0) -> tuple[bool, list[str], str]:
        """One boot; (ran to the end, the driver's answer words, output)."""
        env = interpreter_env(dict(os.environ, MICROPYPATH=f"{self.shim}:{fs}:.frozen", HYPNOLUM_POD_DIR=str(fs),
                                   HYPNOLUM_UID="020000000001"))
        env.pop("HYPNOLUM_POWER_CUT", None)
        if cut:
            env["HYPNOLUM_POWER_CUT"] = f"{cut}:{seed}"
        proc = subprocess.run([self.micropython, "-X", f"heapsize={self.heapsize}", str(self.driver), mode,
                               str(self.data), str(seed)], cwd=fs, env=env, capture_output=True, text=True,
                              timeout=60)
        out = proc.stdout + proc.stderr
        words = next((line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("@@ ")), [])
        return proc.returncode == 0 and bool(words), words, out

    def changes(self, seed: int = 0) -> int:
        """Changes to the filesystem in one uncut update and confirm."""
        fs = self.fresh("count")
        total = 0
        for mode in ("update", "confirm"):
            ok, words, out = self.boot(fs, mode, seed=seed)
            if not ok:
                raise RuntimeError(f"an update without a cut failed ({mode}):\n{out}")
            total += int(words[2])
        return total

    def fresh(self, name: str) -> Path:
        fs = self.dir / name
        if fs.exists():
            shutil.rmtree(fs)
        shutil.copytree(self.template, fs)
        return fs.resolve()

    def _slot_files(self, fs: Path, slot: str) -> dict[str, bytes]:
        root = fs / slot
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    def whole(self, fs: Path, words: list[str]) -> str:
        """'old' or 'new' if the booted slot is one build, whole; else why not."""
        slot, build_hash = words[0], int(words[1])
        got = self._slot_files(fs, slot)
        for name, b in (("old", self.old), ("new", self.new)):
            if got == {f.path: f.data for f in b.slot}:
                if build_hash != b.build_hash:
                    return f"slot {slot} holds the {name} build but the pod hashed it as {build_hash:#010x}"
                return name
        return f"slot {slot} is neither build: {len(got)} files"

    def trial(self, k: int, seed: int, out: Outcome, recover: bool = True) -> None:
        """Cut the power at change k of an update and confirm; check the boot after it."""
        fs = self.fresh("trial")
        left = k
        for mode in ("update", "confirm"):
            ok, words, log = self.boot(fs, mode, cut=left, seed=seed)
            if not ok:
                break  # the power went (or the boot failed: the check boot says which)
            left -= int(words[2])
        out.cuts += 1
        ok, words, log = self.boot(fs, "check", seed=seed)
        verdict = self.whole(fs, words) if ok else "the pod did not boot:\n" + log[-2000:]
        if verdict == "old":
            out.old_boots += 1
        elif verdict == "new":
            out.new_boots += 1
        else:
            out.bricks += 1
            out.failures.append(f"cut at change {k}: {verdict}")
            return
        if recover:
            for mode in ("update", "confirm", "check"):
                ok, words, log = self.boot(fs, mode, seed=seed)
                if not ok:
                    out.failures.append(f"cut at change {k}: recovery {mode} failed:\n{log[-2000:]}")
                    return
            state = json.loads((fs / upload.STATE_FILE).read_text())
            if self.whole(fs, words) == "new" and not state["trial"]:
                out.recovered += 1
            else:
                out.failures.append(f"cut at change {k}: recovery ended on {words} with {state}")


def run(cuts: int, seed: int = 1, workdir: Path | None = None, recover: bool = True) -> Outcome:
    """cuts trials at random changes of the update (seeded)."""
    with tempfile.TemporaryDirectory(prefix="hypnolum-powercut-") as tmp:
        rig = Rig(Path(workdir or tmp))
        total = rig.changes(seed)
        rng = random.Random(seed)
        out = Outcome()
        for _ in range(cuts):
            rig.trial(rng.randint(1, total), seed, out, recover)
        return out
