"""What the entry points share: one-line errors without a traceback, envs built from their presets."""

from __future__ import annotations

import sys
from typing import Sequence


def fail(prog: str, msg: str) -> None:
  """Prints `prog: msg` to stderr and exits with status 2 (a usage error, no traceback)."""
  print(f"{prog}: {msg}", file=sys.stderr)
  raise SystemExit(2)


def preset_env(prog: str, name: str, *, image_size: int, cameras: Sequence[str],
               task_ids: Sequence[str] | None = None, episode_length: int | None = None):
  """(env, its constructor kwargs, episode length) for a registered env with its preset's options
  (configs/default.py ENV_PRESETS), optionally restricted to some task ids of a suite."""
  from configs.default import ENV_PRESETS  # noqa: PLC0415
  from envs import registry  # noqa: PLC0415
  if name not in registry.names():
    fail(prog, f"unknown env {name!r}; registered envs: {list(registry.names())}")
  preset = ENV_PRESETS.get(name, {})
  kwargs = dict(preset.get("kwargs", {}))
  if task_ids:
    try:
      kwargs["task_ids"] = [int(t) for t in task_ids]
    except ValueError:
      fail(prog, f"--task_ids={','.join(task_ids)}: give integers")
  horizon = episode_length or preset.get("episode_length")
  if not horizon:
    fail(prog, f"--episode_length is needed: env {name!r} has no preset")
  try:
    env = registry.make(name, image_size=image_size, cameras=tuple(cameras), **kwargs)
  except ValueError as e:
    fail(prog, str(e))
  return env, kwargs, horizon
