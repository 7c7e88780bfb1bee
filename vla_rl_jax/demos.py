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
import time
from typing import Any, Callable, Iterator

import numpy as np

SEED_STRIDE = 1_000_003   # demonstration seed s starts the episode seeds at s * SEED_STRIDE

FORMAT = "vla_rl_jax.demos/1"
MANIFEST = "manifest.json"


class DemoError(ValueError):
  """Demonstrations cannot be made or used as asked; the message is one line saying why."""


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


def record(out: str, env: Any, expert: Callable[[Any], Any], per_task: int, horizon: int, *,
           name: str, env_kwargs: dict[str, Any], seed_start: int = 0, max_attempts: int = 4,
           batch: int = 16, action_space: str = "", extra: dict[str, Any] | None = None,
           log: Callable[[str], None] = print, drop_failed: bool = False) -> dict[str, Any]:
  """Runs the scripted `expert` (State -> f32[D]) from `env.reset_task(k, PRNGKey(seed))` until
  every task of `env` has `per_task` successful episodes, writes each one and then the manifest to
  `out`, and returns the manifest. Episode seeds count up from `seed_start`; a task whose expert
  still lacks demonstrations after `max_attempts * per_task` tries raises DemoError, or with
  drop_failed=True is dropped: the manifest lists none of its episodes and its instruction under
  "dropped" (launch.pretrain's many procedural tasks). Every round is filled to whole batches of
  `batch` with more tries of the tasks still short (one compiled shape; a task may so get a few
  tries over the limit). The one writer of the format:
  `launch.make_demos`, `launch.pretrain` and the tests call it."""
  import jax  # noqa: PLC0415  (reading demonstrations needs no JAX; recording them does)
  import numpy as np  # noqa: PLC0415
  from vla_rl_jax import evaluation  # noqa: PLC0415
  if not hasattr(env, "reset_task"):
    raise DemoError(f"env {name!r} cannot reset a given task from its training stream (reset_task)")
  os.makedirs(out, exist_ok=True)
  actor = evaluation.expert_actor(expert)
  reset_fn = lambda a: env.reset_task(a[0], jax.random.PRNGKey(a[1]))  # noqa: E731
  need = {k: per_task for k in range(env.num_tasks)}
  tries = {k: 0 for k in need}
  got: dict[int, list] = {k: [] for k in need}
  next_seed = seed_start
  dropped: list[int] = []
  t0 = time.time()
  while any(need.values()):
    starts = []
    for k in need:
      for _ in range(need[k] + (1 if need[k] else 0)):   # one spare per task and round
        if need[k] and tries[k] < max_attempts * per_task:
          starts.append((k, next_seed))
          next_seed += 1
          tries[k] += 1
    if drop_failed:    # tasks out of tries with none left to run: dropped, not in the manifest
      scheduled = {k for k, _ in starts}
      for k in need:
        if need[k] and k not in scheduled:
          dropped.append(k)
          need[k] = 0
      if not any(need.values()):
        break
    if not starts:
      short = {env.instructions[k]: len(got[k]) for k in need if need[k]}
      raise DemoError(f"the expert did not succeed often enough: successes so far {short}")
    # Whole batches only: a partly filled batch costs as much as a full one, and one batch shape is
    # one compilation for the whole recording (a retry round of another size compiled anew, minutes
    # on a CPU). The room goes to more tries of the tasks still short, in turn.
    short_tasks = list(dict.fromkeys(k for k, _ in starts))
    while len(starts) % batch:
      k = short_tasks[len(starts) % len(short_tasks)]
      starts.append((k, next_seed))
      next_seed += 1
      tries[k] += 1
    starts_np = np.asarray(starts, np.int32)
    res = evaluation.run_episodes(env, actor, starts_np, horizon, reset_fn=reset_fn, video_env=env,
                                  batch_size=batch)
    for j, (k, seed) in enumerate(starts_np):
      k = int(k)
      if not res["success"][j] or not need[k]:
        continue
      t = int(res["length"][j])
      f = write_episode(out, k, len(got[k]), res["actions"][j, :t],
                        {c: res["frames"][c][j, :t + 1] for c in env.cameras},
                        res["proprio"][j, :t + 1], int(seed))
      got[k].append({"file": f, "task_id": k, "instruction": env.instructions[k], "length": t,
                     "seed": int(seed)})
      need[k] -= 1
    log(f"make_demos: {sum(len(v) for v in got.values())}/{per_task * env.num_tasks} "
        f"episodes ({time.time() - t0:.0f} s)")
  manifest = {
      "env": name, "env_kwargs": env_kwargs, "instructions": list(env.instructions),
      "cameras": list(env.cameras), "image_size": list(env.image_size), "control_hz": 20,
      "episode_length_limit": horizon, "per_task": per_task, "action_size": int(env.action_size),
      "action_space": action_space, "attempts": {env.instructions[k]: tries[k] for k in tries},
      **(extra or {}), "episodes": [e for k in sorted(got) if k not in dropped for e in got[k]]}
  if drop_failed:
    manifest["dropped"] = [env.instructions[k] for k in sorted(dropped)]
    if not manifest["episodes"]:
      raise DemoError(f"the expert succeeded on none of the {env.num_tasks} tasks")
  write_manifest(out, manifest)
  return {"format": FORMAT, **manifest}

