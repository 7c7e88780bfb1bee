"""The device mesh ("data", "fsdp", "tensor"), logical-axis rules, and input/param shardings.

Trajectories (and environments) are split over ("data", "fsdp"); parameters are sharded by their
logical axis names (models/ annotates them) through LOGICAL_RULES, falling back to replication on a
dimension the mesh axis does not divide, so the same model runs on 1 device, 8 fake CPU devices or a
pod without edits.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vla_rl_jax.config import MeshConfig

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
LOGICAL_RULES: tuple[tuple[str, str | None], ...] = (
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("kv", None),
    ("patch", None),
)


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(cfg.data, cfg.fsdp, cfg.tensor), AXES)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch(mesh: Mesh) -> NamedSharding:
  """Leading axis split over data x fsdp."""
  return NamedSharding(mesh, P(BATCH_AXES))


def constrain_batch(tree: Any, mesh: Mesh) -> Any:
  """with_sharding_constraint: every array's leading (trajectory/env) axis over data x fsdp."""
  sharding = batch(mesh)
  def f(x):
    return jax.lax.with_sharding_constraint(x, sharding) if getattr(x, "ndim", 0) >= 1 else x
  return jax.tree_util.tree_map(f, tree)


def _physical(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  rules = dict(LOGICAL_RULES)
  out = []
  for dim, name in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axis = rules.get(name) if isinstance(name, str) else None
    out.append(axis if axis is not None and dim % mesh.shape[axis] == 0 else None)
  return P(*out)


def param_shardings(boxed_abstract: Any, mesh: Mesh) -> Any:
  """Shardings for the (unboxed) parameter tree from its logically-annotated abstract version."""
  logical = nn.get_partition_spec(boxed_abstract)
  unboxed = nn.meta.unbox(boxed_abstract)
  return jax.tree_util.tree_map(
      lambda spec, x: NamedSharding(mesh, _physical(spec, x.shape, mesh)),
      logical, unboxed, is_leaf=lambda x: isinstance(x, P))
