"""Host-side pictures of rollouts: captioned frames, animated GIFs, contact sheets (Pillow only).

GIF rather than mp4: Pillow writes it with no codec or ffmpeg on the machine, and notebooks, browsers
and TensorBoard's image plugin all show it.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CAPTION_H = 24


def _font():
  return ImageFont.load_default()


def caption(frame: np.ndarray, lines: Sequence[str], colour=(255, 255, 255)) -> np.ndarray:
  """u8[H, W, 3] -> u8[H + CAPTION_H * len(lines) / 2, W, 3]: the frame with text lines under it."""
  h, w, _ = frame.shape
  line_h = CAPTION_H // 2
  img = Image.new("RGB", (w, h + line_h * len(lines)), (0, 0, 0))
  img.paste(Image.fromarray(np.asarray(frame, np.uint8)), (0, 0))
  draw = ImageDraw.Draw(img)
  for i, text in enumerate(lines):
    draw.text((2, h + i * line_h), _fit(draw, text, w - 4), fill=colour, font=_font())
  return np.asarray(img)


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
  """The text, cut with an ellipsis to `width` pixels."""
  if draw.textlength(text, font=_font()) <= width:
    return text
  while text and draw.textlength(text + "...", font=_font()) > width:
    text = text[:-1]
  return text + "..."


def episode_frames(frames: np.ndarray, length: int, instruction: str, success: bool,
                   upscale: int = 1) -> list[np.ndarray]:
  """The frames of one episode (u8[T+1, H, W, 3], the first `length + 1` used), captioned with the
  instruction and the step / outcome."""
  out = []
  outcome = "SUCCESS" if success else "failure"
  for t in range(min(length + 1, len(frames))):
    f = frames[t]
    if upscale > 1:
      f = np.repeat(np.repeat(f, upscale, 0), upscale, 1)
    tail = f"step {t}/{length}" + (f"  {outcome}" if t == length else "")
    out.append(caption(f, [instruction, tail], (120, 255, 120) if (t == length and success)
                       else (255, 255, 255)))
  return out


def rollout_strip(frames: np.ndarray, length: int, chunk: int, instruction: str, success: bool,
                  max_tiles: int = 8, min_size: int = 96) -> np.ndarray:
  """One picture of an episode: up to `max_tiles` of the frames the policy saw (u8[C, H, W, 3], one
  per policy call of `chunk` steps; the episode took ceil(length / chunk) calls), evenly spaced,
  each captioned with its control step, side by side under the instruction and the outcome. Small
  frames are enlarged to at least `min_size` pixels (nearest neighbour)."""
  calls = max(1, min(len(frames), -(-int(length) // chunk)))
  picks = sorted(set(np.linspace(0, calls - 1, min(max_tiles, calls)).round().astype(int)))
  up = max(1, -(-min_size // frames.shape[1]))
  tiles = []
  for c in picks:
    f = np.repeat(np.repeat(np.asarray(frames[c], np.uint8), up, 0), up, 1)
    tiles.append(caption(f, [f"step {c * chunk}"]))
  strip = np.concatenate(tiles, axis=1)
  outcome = f"{'SUCCESS' if success else 'failure'} after {int(length)} steps"
  return caption(strip, [instruction, outcome], (120, 255, 120) if success else (255, 255, 255))


def write_gif(path: str, frames: Sequence[np.ndarray], fps: int = 20) -> str:
  """Writes an animated GIF (looping; the last frame held for one second)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  imgs = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
  durations = [int(1000 / fps)] * len(imgs)
  durations[-1] = 1000
  imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=durations, loop=0,
               optimize=False)
  return path


def contact_sheet(path: str, tiles: Sequence[np.ndarray], columns: int = 4) -> str:
  """Writes a PNG grid of equally sized u8[H, W, 3] tiles."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  h, w, _ = tiles[0].shape
  rows = -(-len(tiles) // columns)
  sheet = np.zeros((rows * h, min(columns, len(tiles)) * w, 3), np.uint8)
  for i, t in enumerate(tiles):
    r, c = divmod(i, columns)
    sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = t
  Image.fromarray(sheet).save(path)
  return path
