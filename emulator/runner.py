"""Run N emulated pods: the ``Emulator`` context manager and ``hypnolum emulate``.

In-process (tests, the demo)::

    async with Emulator(2, workdir) as emu:
        pod = emu["pod-01"]          # or emu.pods[0]
        serial.Serial(str(pod.tty_path))   # the stable pty symlink
        await pod.leds.wait_for(lambda f: f.all((255, 0, 0)), timeout=5)

From the shell::

    hypnolum emulate --pods 2 --dir run/emu
    pod-01 /abs/run/emu/pod-01.tty
    pod-02 /abs/run/emu/pod-02.tty

one line per pod once all are booted (with ``--headset-pty`` a third column:
the pod's virtual headset on a pty of its own, ``<pod_id>-headset.tty``), then it runs until SIGINT/SIGTERM and
stops every interpreter it started.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path

from .pod import EmulatedPod, PodError


class Emulator:
    """N pods ``pod-01``, ``pod-02``, ... under ``workdir``.

    Each pod gets ``workdir/<pod_id>/`` and the symlink ``workdir/<pod_id>.tty``.
    Extra keyword arguments go to every :class:`EmulatedPod` (e.g. ``launch``,
    ``micropypath``, ``heapsize`` to run other firmware).
    """

    def __init__(self, n_pods: int, workdir: str | os.PathLike, seed: int = 0, led_count: int = 30,
                 record_frames: str | os.PathLike | None = None, **pod_kwargs):
        if n_pods < 1:
            raise ValueError("n_pods must be at least 1")
        self.workdir = Path(workdir).resolve()
        self.pods = [
            EmulatedPod(
                f"pod-{i:02d}",
                self.workdir / f"pod-{i:02d}",
                seed=seed,
                led_count=led_count,
                **pod_kwargs,
            )
            for i in range(1, n_pods + 1)
        ]
        self.record_frames = Path(record_frames).resolve() if record_frames is not None else None

    @property
    def ports(self) -> dict[str, str]:
        """pod_id -> the stable pty path hostd opens (``workdir/<pod_id>.tty``)."""
        return {pod.pod_id: str(pod.tty_path) for pod in self.pods}

    def __getitem__(self, pod_id: str) -> EmulatedPod:
        for pod in self.pods:
            if pod.pod_id == pod_id:
                return pod
        raise KeyError(pod_id)

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.record_frames is not None:
            for pod in self.pods:  # docs/emulator.md, "Recording frames"
                pod.leds.record(self.record_frames / f"{pod.pod_id}.frames")
        results = await asyncio.gather(*(pod.start() for pod in self.pods), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]

    async def stop(self) -> None:
        await asyncio.gather(*(pod.stop() for pod in self.pods), return_exceptions=True)

    async def wait_links(self, timeout: float = 10.0) -> None:
        """Until every pod's firmware has opened its link socket."""
        await asyncio.gather(*(pod.wait_link(timeout) for pod in self.pods))

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hypnolum emulate", description="Run emulated pods with ptys for hostd.")
    p.add_argument("--pods", type=int, default=1, help="number of pods (default 1)")
    p.add_argument("--dir", type=Path, default=None, help="working directory (default: a new temporary one)")
    p.add_argument("--led-count", type=int, default=30, help="LEDs per pod (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic EEG, clocks and ids")
    p.add_argument("--record-frames", type=Path, default=None, metavar="DIR",
                   help="write every LED frame of each pod to DIR/<pod_id>.frames (see docs/emulator.md)")
    p.add_argument("--channels", type=int, choices=(8, 16), default=8, help="EEG channels: 16 = Cyton with Daisy")
    p.add_argument("--headset-pty", action="store_true",
                   help="also serve each pod's virtual headset on a pty of its own (a third column)")
    return p


async def _run(args: argparse.Namespace) -> int:
    workdir = args.dir if args.dir is not None else Path(tempfile.mkdtemp(prefix="hypnolum-emu-"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    emu = Emulator(args.pods, workdir, seed=args.seed, led_count=args.led_count, record_frames=args.record_frames,
                   eeg_channels=args.channels, headset_pty=args.headset_pty)
    try:
        await emu.start()
        await emu.wait_links(15)  # the firmware is up: the ptys lead somewhere
    except PodError as exc:
        await emu.stop()
        print(f"hypnolum emulate: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"hypnolum emulate: {len(emu.pods)} pods in {emu.workdir}; SIGINT/SIGTERM stops", file=sys.stderr)
        for pod in emu.pods:
            if pod.headset_pty is not None:
                print(pod.pod_id, pod.tty_path, pod.headset_pty.link)
            else:
                print(pod.pod_id, pod.tty_path)
        sys.stdout.flush()
        await stop.wait()
    finally:
        await emu.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.pods < 1:
        print("hypnolum emulate: --pods must be at least 1", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_run(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
