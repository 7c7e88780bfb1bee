"""Name -> env constructor. Constructors take (image_size, cameras, **kwargs) and return an Env.

Heavy task modules are imported lazily so listing names stays cheap. A factory declares its
options (envs.schema, `@declares`): `kwargs_schema`, `check_kwargs` and `cameras` read them; a
factory registered without one (user code, test envs) takes its kwargs unchecked.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence

from envs import schema as schema_lib
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
    # procedural tasks from LIBERO's categories, none of the 40 (envs.tasks.pretrain_tasks)
    "libero_pretrain": "envs.tasks.libero_suite:make_libero_pretrain",
}


def names() -> tuple[str, ...]:
  return tuple(sorted(_ENVS))


def register(name: str, target: str) -> None:
  """Registers "module:factory" under `name` (later tasks and user code call this)."""
  _ENVS[name] = target


def _factory(name: str) -> Callable[..., Env]:
  if name not in _ENVS:
    raise ValueError(f"unknown env {name!r}; registered envs: {list(names())}")
  module, factory = _ENVS[name].split(":")
  return getattr(importlib.import_module(module), factory)


def kwargs_schema(name: str) -> schema_lib.Schema | None:
  """The env's declared constructor options (None: the factory declares none)."""
  return getattr(_factory(name), "schema", None)


def check_kwargs(name: str, kwargs: Mapping[str, Any], *, python: bool = True) -> dict[str, Any]:
  """Every declared option of env `name`, validated, defaults filled in; raises
  envs.schema.OptionError naming the option, its value and what is allowed (an unknown one with a
  "did you mean"). python=False: also refuse the Python-only options (a config cannot carry them)."""
  schema = kwargs_schema(name)
  if schema is None:
    return dict(kwargs)
  return schema.check(kwargs, name, python=python)


def cameras(name: str) -> tuple[str, ...] | None:
  """Camera names env `name` can render (None: undeclared)."""
  schema = kwargs_schema(name)
  return None if schema is None else schema.cameras


def make(name: str, *, image_size: int, cameras: Sequence[str], **kwargs: Any) -> Env:
  return _factory(name)(image_size=image_size, cameras=tuple(cameras), **kwargs)
