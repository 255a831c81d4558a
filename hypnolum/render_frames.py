"""``hypnolum render``: pictures of a pod's recorded LED frames.

    hypnolum render run/frames/pod-01.frames --png strip.png --gif strip.gif

The PNG is the strip over time: one row per time step (time runs down),
one column block per LED, with a time ruler on the left every second. The
GIF plays the strip as a row of LED dots at --gif-fps. Colours are the sRGB
bytes the pod drives, so the picture looks as the LEDs do to the eye.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .emulator.frames import FrameFileError, read_frames


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(times in s from the first frame, frames (T, N, 3) uint8); frames of another LED count are skipped."""
    times, rows = [], []
    count = None
    for wall, frame in read_frames(path):
        if count is None:
            count = frame.count
        if frame.count != count:
            continue
        times.append(wall)
        rows.append(np.frombuffer(frame.rgb, dtype=np.uint8).reshape(count, 3))
    if not rows:
        raise FrameFileError(f"{path}: no frames")
    t = np.asarray(times, dtype=np.float64)
    return t - t[0], np.stack(rows)


def resample(t: np.ndarray, frames: np.ndarray, step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The frame shown at each multiple of step_s (the latest at or before it)."""
    grid = np.arange(0.0, t[-1] + 1e-9, step_s)
    idx = np.searchsorted(t, grid, side="right") - 1
    return grid, frames[np.clip(idx, 0, len(frames) - 1)]


def strip_png(t: np.ndarray, frames: np.ndarray, out: Path, led_px: int = 12, row_s: float = 0.05,
              ruler_px: int = 40) -> Image.Image:
    grid, fr = resample(t, frames, row_s)
    body = np.repeat(fr, led_px, axis=1)  # (rows, N*led_px, 3)
    img = Image.new("RGB", (ruler_px + body.shape[1], body.shape[0]), (24, 24, 24))
    img.paste(Image.fromarray(body, "RGB"), (ruler_px, 0))
    draw = ImageDraw.Draw(img)
    per_s = round(1 / row_s)
    for y in range(0, body.shape[0], per_s):
        draw.line([(ruler_px - 8, y), (ruler_px - 1, y)], fill=(160, 160, 160))
        if (y // per_s) % 5 == 0:
            draw.text((2, y), f"{y // per_s}s", fill=(200, 200, 200))
    img.save(out)
    return img


def strip_gif(t: np.ndarray, frames: np.ndarray, out: Path, fps: float = 20.0, dot_px: int = 14) -> None:
    grid, fr = resample(t, frames, 1.0 / fps)
    n = fr.shape[1]
    images = []
    for row in fr:
        im = Image.new("RGB", (n * dot_px + 4, dot_px + 4), (10, 10, 10))
        d = ImageDraw.Draw(im)
        for i, (r, g, b) in enumerate(row):
            x = 2 + i * dot_px
            d.ellipse([x + 1, 3, x + dot_px - 2, dot_px], fill=(int(r), int(g), int(b)))
        images.append(im)
    images[0].save(out, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hypnolum render", description="Render recorded LED frames to PNG / GIF.")
    p.add_argument("frames", type=Path, help="a .frames file from hypnolum emulate --record-frames")
    p.add_argument("--png", type=Path, help="strip-over-time picture")
    p.add_argument("--gif", type=Path, help="animated strip")
    p.add_argument("--row-ms", type=float, default=50.0, help="PNG time per row (default 50 ms)")
    p.add_argument("--gif-fps", type=float, default=20.0, help="GIF frames per second (default 20)")
    args = p.parse_args(argv)
    if args.png is None and args.gif is None:
        p.error("give --png and/or --gif")
    try:
        t, frames = load(args.frames)
    except (OSError, FrameFileError) as exc:
        print(f"hypnolum render: {exc}", file=sys.stderr)
        return 1
    if args.png is not None:
        strip_png(t, frames, args.png, row_s=args.row_ms / 1000)
        print(f"{args.png}: {len(frames)} frames, {t[-1]:.1f} s, {frames.shape[1]} LEDs")
    if args.gif is not None:
        strip_gif(t, frames, args.gif, fps=args.gif_fps)
        print(f"{args.gif}: {args.gif_fps:g} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
