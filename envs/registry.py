"""Name -> env constructor. Constructors take (image_size, cameras, **kwargs) and return an Env.

Heavy task modules are imported lazily so listing names (config validation) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Sequence

from envs.base import Env

# name -> "module:factory"
_ENVS: dict[str, str] = {
    "fake_reach": "envs.fake:make_fake_reach",
    "libero_bowl_on_plate": "envs.tasks.libero_env:make_bowl_on_plate",
    # LIBERO's four suites, all ten tasks of each in one scene (envs.tasks.libero_suite)
    "libero_spatial": "envs.tasks.libero_suite:make_libero_spatial",
    "libero_object": "envs.tasks.libero_suite:make_libero_object",
    "libero_goal": "envs.tasks.libero_suite:make_libero_goal",
    "libero_10": "envs.tasks.libero_suite:make_libero_10",
}


def names() -> tuple[str, ...]:
  return tuple(sorted(_ENVS))


def register(name: str, target: str) -> None:
  """Registers "module:factory" under `name` (later tasks and user code call this)."""
  _ENVS[name] = target


def make(name: str, *, image_size: int, cameras: Sequence[str], **kwargs: Any) -> Env:
  if name not in _ENVS:
    raise ValueError(f"unknown env {name!r}; registered envs: {list(names())}")
  module, factory = _ENVS[name].split(":")
  ctor: Callable[..., Env] = getattr(importlib.import_module(module), factory)
  return ctor(image_size=image_size, cameras=tuple(cameras), **kwargs)
