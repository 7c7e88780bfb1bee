"""Orbax checkpoints restored straight into sharded abstract targets; the resolved config beside.

Orbax writes each step to a temporary directory and renames it when complete, so a run killed while
saving leaves the last complete checkpoint as the latest one. Nothing is pickled: arrays go through
orbax's array handlers and the config is JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax
import orbax.checkpoint as ocp

from vla_rl_jax import config as config_lib

CONFIG_FILE = "config.json"


def write_config(workdir: str, cfg: config_lib.Config) -> None:
  """Atomically writes the resolved config as workdir/config.json (only process 0 writes)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".config.", suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    f.write(config_lib.dumps(cfg))
  os.replace(tmp, os.path.join(workdir, CONFIG_FILE))


def read_config_json(workdir: str) -> dict | None:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_config(workdir: str, num_devices: int | None = None) -> config_lib.Config:
  """The run's config with a mesh filled from THIS machine's devices (for eval/export)."""
  with open(os.path.join(workdir, CONFIG_FILE)) as f:
    return config_lib.loads(f.read(), num_devices, fresh_topology=True)


class Checkpointer:
  """Saves/restores (TrainState, EnvStats) under workdir/checkpoints/<step>."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=False),
        item_names=("state", "env_stats"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, env_stats: Any) -> None:
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     env_stats=ocp.args.StandardSave(env_stats)))
    self.manager.wait_until_finished()

  def restore(self, step: int, abstract_state: Any, abstract_stats: Any, state_shardings: Any,
              stats_shardings: Any):
    """Restores into the given shardings (each device reads only its own shards)."""
    def target(abstract, shardings):
      return jax.tree_util.tree_map(
          lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target(abstract_state, state_shardings)),
        env_stats=ocp.args.StandardRestore(target(abstract_stats, stats_shardings))))
    return out["state"], out["env_stats"]

  def close(self) -> None:
    self.manager.close()
