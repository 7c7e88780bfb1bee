"""Demonstrations on disk: what `launch.make_demos` writes and SFT reads (format below).

A demonstration directory holds:

  manifest.json   {"format": "vla_rl_jax.demos/1", "env": name, "env_kwargs": {...},
                   "instructions": [task_id -> text], "cameras": [...], "image_size": [H, W],
                   "action_space": what an action means, "control_hz": 20,
                   "episodes": [{"file", "task_id", "instruction", "length", "seed"}], ...}
  task<k>_demo<j>.npz   (numpy, compressed, no pickle), one successful episode of T control steps:
      actions         f32[T, D]        the action applied at step t (LIBERO: OSC_POSE deltas
                                       [dx, dy, dz, drx, dry, drz, gripper] in [-1, 1], gripper
                                       +1 closes, -1 opens)
      image_<camera>  u8[T + 1, H, W, 3]  what the camera saw BEFORE action t (index T: the final,
                                       successful state); row 0 is the top of the image
      proprio         f32[T + 1, P]    the env's proprioception at the same instants
      task_id         i32[]            index into manifest["instructions"]
      success         bool[]           always true (only successful episodes are kept)
      seed            i64[]            the training-stream reset it started from

Initial states come from the env's TRAINING stream (`reset_task`: re-drawn layouts that never equal
an evaluation state), so demonstrations and held-out evaluation never share a state.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator

import numpy as np

FORMAT = "vla_rl_jax.demos/1"
MANIFEST = "manifest.json"


def episode_file(task_id: int, j: int) -> str:
  return f"task{task_id:02d}_demo{j:03d}.npz"


def write_episode(directory: str, task_id: int, j: int, actions: np.ndarray,
                  images: dict[str, np.ndarray], proprio: np.ndarray, seed: int) -> str:
  """One successful episode -> `directory/task<k>_demo<j>.npz` (written to a temp name, renamed)."""
  t = len(actions)
  for c, im in images.items():
    if im.shape[0] != t + 1 or im.dtype != np.uint8:
      raise ValueError(f"camera {c!r}: {im.shape} {im.dtype}, want u8[{t + 1}, H, W, 3]")
  name = episode_file(task_id, j)
  tmp = os.path.join(directory, name + ".tmp.npz")
  np.savez_compressed(tmp, actions=np.asarray(actions, np.float32), proprio=np.asarray(proprio, np.float32),
                      task_id=np.int32(task_id), success=np.bool_(True), seed=np.int64(seed),
                      **{f"image_{c}": im for c, im in images.items()})
  os.replace(tmp, os.path.join(directory, name))
  return name


def write_manifest(directory: str, manifest: dict[str, Any]) -> None:
  tmp = os.path.join(directory, MANIFEST + ".tmp")
  with open(tmp, "w") as f:
    json.dump({"format": FORMAT, **manifest}, f, indent=1)
  os.replace(tmp, os.path.join(directory, MANIFEST))


def read_manifest(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: not a demonstration directory "
                            "(make one with python -m launch.make_demos)")
  with open(path) as f:
    m = json.load(f)
  if m.get("format") != FORMAT:
    raise ValueError(f"{path}: format {m.get('format')!r}, this code reads {FORMAT!r}")
  return m


def episodes(directory: str) -> Iterator[dict[str, np.ndarray]]:
  """Yields each episode's arrays (as written) plus its manifest entry under "meta"."""
  m = read_manifest(directory)
  for e in m["episodes"]:
    with np.load(os.path.join(directory, e["file"]), allow_pickle=False) as z:
      yield {k: np.asarray(z[k]) for k in z.files} | {"meta": e}
