"""The device mesh ("data", "fsdp", "tensor"), logical-axis rules, and input/param shardings.

Trajectories (and environments) are split over ("data", "fsdp"); parameters are sharded by their
logical axis names (models/ annotates them) through LOGICAL_RULES, falling back to replication on a
dimension the mesh axis does not divide, so the same model runs on 1 device, 8 fake CPU devices or a
pod without edits. The mesh comes from `jax.experimental.mesh_utils` (topology-aware on TPU; with
mesh.dcn_data > 1 the data axis spans slices over DCN). A fallback costs memory on every device, so
`replication_fallbacks` lists each one and `check_replication` refuses large ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vla_rl_jax.config import ConfigError, MeshConfig

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # parameters
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("kv", None),
    ("patch", None),
    ("layers", None),      # the stacked-blocks axis of nn.scan'ed layers
    ("norm", None),        # norm scales and biases: small, kept whole
    # activations (models/oft.py's with_logical_constraint): the batch over data x fsdp, the hidden
    # (act_embed) whole, MLP hidden and attention heads over tensor. Distinct from the parameter
    # names because "embed" is fsdp for weights, and one mesh axis cannot shard two dimensions.
    ("batch", BATCH_AXES),
    ("length", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
)


def _granule_key(device) -> tuple[str, int]:
  """The DCN unit a device belongs to: its TPU slice, else its process (GPU hosts, CPU tests)."""
  if getattr(device, "slice_index", None) is not None:
    return "slice", device.slice_index
  return "process", device.process_index


def device_grid(cfg: MeshConfig, devices=None) -> np.ndarray:
  """devices[data, fsdp, tensor] laid out by mesh_utils (make_mesh without the Mesh, for tests).

  mesh_utils maps the axes onto the TPU torus (tensor, the most talkative, on the closest chips),
  sorts GPUs by id and reshapes any other kind (CPU) as given, so it needs no fallback of ours:
  a shape the torus cannot host, or a device subset with holes, is an error worth seeing rather
  than a silently slow mesh.
  """
  devices = list(devices if devices is not None else jax.devices())
  shape = (cfg.data, cfg.fsdp, cfg.tensor)
  if len(devices) != cfg.data * cfg.fsdp * cfg.tensor:
    raise ValueError(f"mesh (data, fsdp, tensor)={shape} needs {np.prod(shape)} devices; "
                     f"got {len(devices)}")
  kinds = sorted({_granule_key(d)[0] for d in devices})
  granules = sorted({_granule_key(d) for d in devices})
  if cfg.dcn_data == 1:
    if len(granules) > 1 and kinds == ["slice"] and devices[0].platform == "tpu":
      # one ICI mesh cannot span TPU slices: mesh_utils would fail on the torus, less clearly
      raise ConfigError(f"config.mesh.dcn_data=1: the devices span {len(granules)} TPU slices; "
                        f"set mesh.dcn_data={len(granules)} so the data axis crosses them over DCN")
    return mesh_utils.create_device_mesh(shape, devices)
  if len(granules) != cfg.dcn_data:
    raise ConfigError(
        f"config.mesh.dcn_data={cfg.dcn_data}: these {len(devices)} {devices[0].platform} devices "
        f"form {len(granules)} {'/'.join(kinds)} group(s) (slices, else processes); dcn_data must "
        f"equal that count (1 on a single slice or host)")
  # Each slice holds an ICI mesh (data // dcn_data, fsdp, tensor); slices stack along data only, so
  # only the data-parallel gradient all-reduce crosses the slow network.
  return mesh_utils.create_hybrid_device_mesh(
      (cfg.data // cfg.dcn_data, cfg.fsdp, cfg.tensor), (cfg.dcn_data, 1, 1), devices,
      process_is_granule=kinds != ["slice"])


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
  return Mesh(device_grid(cfg, devices), AXES)


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


def constrain_logical(x: jax.Array, names: tuple, mesh: Mesh) -> jax.Array:
  """with_sharding_constraint by logical names (LOGICAL_RULES): the model's activation constraints.
  A dimension its mesh axes do not divide is left unconstrained on them, as param_shardings does."""
  spec, _ = _physical(P(*names), x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


@dataclasses.dataclass(frozen=True)
class Fallback:
  """One parameter dimension left whole (replicated) because its mesh axis does not divide it."""
  path: str                # e.g. "tok_embed/embedding"
  shape: tuple[int, ...]
  dtype: str
  dim: int                 # index into shape
  logical_axis: str        # the model's name for that dimension ("vocab")
  mesh_axis: str           # where LOGICAL_RULES wanted it ("tensor")
  axis_size: int
  nbytes: int              # the whole parameter
  device_bytes: int        # what each device holds of it as actually sharded

  def describe(self) -> str:
    return (f"{self.path} {self.dtype}{list(self.shape)}: '{self.logical_axis}' dim "
            f"{self.shape[self.dim]} not divisible by mesh.{self.mesh_axis}={self.axis_size}, "
            f"replicated over it ({self.device_bytes / 2**20:.3g} MB per device)")


def _physical(spec: P, shape: tuple[int, ...], mesh: Mesh) -> tuple[P, list[tuple[int, str, str]]]:
  """The mesh PartitionSpec for a logical one, and the (dim, logical, mesh axis) left replicated."""
  rules = dict(LOGICAL_RULES)
  out, fallbacks = [], []
  for i, (dim, name) in enumerate(zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)))):
    axis = rules.get(name) if isinstance(name, str) else None
    size = (int(np.prod([mesh.shape[a] for a in axis])) if isinstance(axis, tuple)
            else mesh.shape[axis] if axis is not None else 1)
    if axis is not None and dim % size:
      fallbacks.append((i, name, axis))
      axis = None
    out.append(axis)
  return P(*out), fallbacks


def _specs(boxed_abstract: Any) -> tuple[Any, Any]:
  return nn.get_partition_spec(boxed_abstract), nn.meta.unbox(boxed_abstract)


def param_shardings(boxed_abstract: Any, mesh: Mesh) -> Any:
  """Shardings for the (unboxed) parameter tree from its logically-annotated abstract version."""
  logical, unboxed = _specs(boxed_abstract)
  return jax.tree_util.tree_map(
      lambda spec, x: NamedSharding(mesh, _physical(spec, x.shape, mesh)[0]),
      logical, unboxed, is_leaf=lambda x: isinstance(x, P))


def replication_fallbacks(boxed_abstract: Any, mesh: Mesh) -> tuple[Fallback, ...]:
  """Every dimension param_shardings replicates although its logical axis asks for a mesh axis."""
  logical, unboxed = _specs(boxed_abstract)
  specs = jax.tree_util.tree_leaves(logical, is_leaf=lambda x: isinstance(x, P))
  leaves = jax.tree_util.tree_flatten_with_path(unboxed)[0]
  out = []
  for spec, (path, x) in zip(specs, leaves, strict=True):
    physical, fallbacks = _physical(spec, x.shape, mesh)
    nbytes = int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
    split = int(np.prod([mesh.shape[a] for a in physical if a is not None], dtype=np.int64))
    name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
    out += [Fallback(path=name, shape=tuple(x.shape), dtype=str(np.dtype(x.dtype)), dim=i,
                     logical_axis=logical_axis, mesh_axis=axis, axis_size=mesh.shape[axis],
                     nbytes=nbytes, device_bytes=nbytes // split)
            for i, logical_axis, axis in fallbacks]
  return tuple(out)


def check_replication(fallbacks: tuple[Fallback, ...], cfg: MeshConfig) -> None:
  """ConfigError if, under fsdp or tensor > 1, a fallback leaves more than mesh.max_replicated_mb
  on each device: a model-parallel run that silently keeps a big matrix whole can run out of memory
  (or just waste it) at full size, far from the config line that caused it."""
  if cfg.fsdp == 1 and cfg.tensor == 1:
    return
  limit = cfg.max_replicated_mb * 2**20
  big = [f for f in fallbacks if f.device_bytes > limit]
  if big:
    lines = "\n  ".join(
        f"{f.describe()}; choose mesh.{f.mesh_axis} dividing {f.shape[f.dim]}, or resize the "
        f"model's '{f.logical_axis}' dimension to a multiple of {f.axis_size}" for f in big)
    raise ConfigError(
        f"config.mesh.max_replicated_mb={cfg.max_replicated_mb}: {len(big)} parameter(s) fall back "
        f"to replication above the limit:\n  {lines}\n(or raise mesh.max_replicated_mb to accept "
        f"the memory)")
