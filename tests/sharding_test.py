"""The mesh (mesh_utils layout, multi-slice data axis) and the replication-fallback list and limit."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs.default import get_config
from vla_rl_jax import config as config_lib
from vla_rl_jax import sharding
from vla_rl_jax.builders import build
from vla_rl_jax.config import ConfigError, MeshConfig


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_mesh_shape_and_axes_on_8_devices(shape):
  mesh = sharding.make_mesh(MeshConfig(*shape))
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert mesh.devices.shape == shape
  assert dict(mesh.shape) == dict(zip(sharding.AXES, shape))
  assert sorted(d.id for d in mesh.devices.flat) == list(range(8))  # each device exactly once


def test_mesh_on_one_device_and_from_resolved_config():
  one = jax.devices()[:1]
  mesh = sharding.make_mesh(MeshConfig(1, 1, 1), one)
  assert mesh.devices.shape == (1, 1, 1) and mesh.devices.flat[0] == one[0]
  c = get_config("variant=tiny")
  c.mesh.fsdp = 4
  cfg = config_lib.resolve(c, 8)  # data = -1 filled in: 8 / 4
  assert sharding.make_mesh(cfg.mesh).devices.shape == (2, 4, 1)
  with pytest.raises(ValueError, match="needs 8 devices; got 1"):
    sharding.make_mesh(cfg.mesh, one)


@dataclasses.dataclass(frozen=True)
class SliceDevice:
  """Stands in for a multi-slice TPU device: CPU devices carry no slice_index. platform 'cpu' makes
  mesh_utils lay each slice out by reshape, so only our slice bookkeeping is under test."""
  id: int
  slice_index: int
  process_index: int = 0
  platform: str = "cpu"
  device_kind: str = "cpu"


def test_dcn_data_stacks_whole_slices_along_data():
  # 8 devices in 2 slices, listed interleaved so a plain reshape would mix the slices on every axis
  devices = [SliceDevice(id=i, slice_index=i % 2) for i in range(8)]
  grid = sharding.device_grid(MeshConfig(4, 2, 1, dcn_data=2), devices)
  assert grid.shape == (4, 2, 1)
  slices = np.vectorize(lambda d: d.slice_index)(grid)
  # data rows 0-1 are slice 0, rows 2-3 slice 1: fsdp and tensor never cross the slow network
  np.testing.assert_array_equal(slices[:, :, 0], [[0, 0], [0, 0], [1, 1], [1, 1]])
  assert sorted(d.id for d in grid.flat) == list(range(8))
  tpus = [dataclasses.replace(d, platform="tpu") for d in devices]
  with pytest.raises(ConfigError, match=r"config.mesh.dcn_data=1: the devices span 2 TPU slices"):
    sharding.device_grid(MeshConfig(8, 1, 1), tpus)  # one ICI mesh cannot span slices
  with pytest.raises(ConfigError, match=r"config.mesh.dcn_data=4: .* form 2 slice group"):
    sharding.device_grid(MeshConfig(4, 2, 1, dcn_data=4), devices)
  # real CPU devices have no slice_index: their DCN unit is the process, and this is one process
  with pytest.raises(ConfigError, match=r"config.mesh.dcn_data=2: .* form 1 process group"):
    sharding.make_mesh(MeshConfig(8, 1, 1, dcn_data=2))


def test_dcn_data_is_validated_at_config_time():
  c = get_config("variant=tiny")
  c.mesh.dcn_data = 2
  assert config_lib.resolve(c, 8).mesh.dcn_data == 2  # divides the filled-in data = 8
  c.mesh.fsdp, c.mesh.dcn_data = 2, 3                   # data = 4
  with pytest.raises(ConfigError, match=r"config.mesh.dcn_data=3: must divide mesh.data=4"):
    config_lib.resolve(c, 8)


_zeros = nn.initializers.zeros


class Tiny(nn.Module):
  """Parameters whose dimensions divide the mesh axes or not, chosen to be checked by hand."""

  @nn.compact
  def __call__(self, x):
    p = lambda name, names, shape: self.param(name, nn.with_logical_partitioning(_zeros, names), shape)
    p("a", ("embed", "mlp"), (8, 12))    # divides fsdp=4 and tensor=2
    p("b", ("embed", None), (6, 8))      # 6 % 4: embed falls back under fsdp=4
    self.param("c", _zeros, (10,))       # no logical names: replicated by design, never listed
    p("d", ("vocab", "embed"), (3, 5))   # vocab -> tensor (3 % 2), embed -> fsdp (5 % 4)
    p("f", ("embed", "mlp"), (8, 3))     # embed shards over fsdp; mlp 3 % 2 under tensor=2
    return nn.Dense(3, param_dtype=jnp.bfloat16, name="proj",  # kernel [10, 3] bf16, bias unnamed
                    kernel_init=nn.with_logical_partitioning(_zeros, ("embed", "mlp")))(x)


def _fallbacks(shape):
  mesh = sharding.make_mesh(MeshConfig(*shape))
  boxed = jax.eval_shape(lambda: Tiny().init(jax.random.PRNGKey(0), jnp.zeros((1, 10)))["params"])
  shardings = sharding.param_shardings(boxed, mesh)
  fallbacks = sharding.replication_fallbacks(boxed, mesh)
  return shardings, fallbacks, {(f.path, f.dim): f for f in fallbacks}


def test_fallback_list_under_fsdp_4():
  shardings, fallbacks, by = _fallbacks((2, 4, 1))
  # by hand: "embed" -> fsdp (4) fails on b[6], d[5] and proj/kernel[10]; tensor = 1 divides all
  assert sorted(by) == [("b", 0), ("d", 1), ("proj/kernel", 0)]
  b = by["b", 0]
  assert (b.shape, b.dtype, b.logical_axis, b.mesh_axis, b.axis_size) == ((6, 8), "float32", "embed", "fsdp", 4)
  assert b.nbytes == b.device_bytes == 6 * 8 * 4           # nothing else splits it
  assert by["d", 1].nbytes == by["d", 1].device_bytes == 3 * 5 * 4
  assert by["proj/kernel", 0].nbytes == 10 * 3 * 2          # bfloat16
  # the shardings really are replicated where listed, sharded elsewhere
  assert shardings["b"].spec == P(None, None)
  assert shardings["a"].spec == shardings["f"].spec == P("fsdp", "tensor")  # tensor = 1 divides
  assert "embed" in b.describe() and "mesh.fsdp=4" in b.describe()


def test_fallback_list_under_fsdp_4_tensor_2():
  shardings, _, by = _fallbacks((1, 4, 2))
  assert sorted(by) == [("b", 0), ("d", 0), ("d", 1), ("f", 1), ("proj/kernel", 0),
                        ("proj/kernel", 1)]
  f = by["f", 1]
  assert (f.logical_axis, f.mesh_axis, f.axis_size) == ("mlp", "tensor", 2)
  assert f.nbytes == 8 * 3 * 4 and f.device_bytes == 8 * 3 * 4 // 4  # still split over fsdp
  assert shardings["a"].spec == P("fsdp", "tensor") and shardings["f"].spec == P("fsdp", None)


def test_large_fallback_is_an_error_under_model_parallelism():
  _, fallbacks, _ = _fallbacks((2, 4, 1))
  mb = 1 / 2**20  # one byte, in MB
  sharding.check_replication(fallbacks, MeshConfig(2, 4, 1, max_replicated_mb=192 * mb))  # b = 192 B
  with pytest.raises(ConfigError) as e:
    sharding.check_replication(fallbacks, MeshConfig(2, 4, 1, max_replicated_mb=191 * mb))
  msg = str(e.value)
  assert "config.mesh.max_replicated_mb" in msg and "1 parameter(s)" in msg
  assert "b float32[6, 8]" in msg and "mesh.fsdp=4" in msg and "choose mesh.fsdp dividing 6" in msg
  with pytest.raises(ConfigError, match="3 parameter"):
    sharding.check_replication(fallbacks, MeshConfig(2, 4, 1, max_replicated_mb=0.0))
  # pure data parallelism replicates everything anyway: no limit applies
  sharding.check_replication(fallbacks, MeshConfig(8, 1, 1, max_replicated_mb=0.0))


def test_build_lists_fallbacks_and_refuses_large_ones():
  c = get_config("variant=tiny")
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, 2
  b = build(config_lib.resolve(c, 8))
  # the tiny VLA: every dimension divides 2 except the 515-id vocabulary of the token embedding
  assert [(f.path, f.shape, f.logical_axis, f.mesh_axis) for f in b.replicated_params] == [
      ("tok_embed/embedding", (515, 64), "vocab", "tensor")]
  assert b.replicated_params[0].device_bytes == 515 * 64 * 4 // 2  # embed still split over fsdp
  c.mesh.max_replicated_mb = 0.05  # 65920 B per device is 0.063 MB
  with pytest.raises(ConfigError, match=r"(?s)max_replicated_mb=0.05: .*tok_embed/embedding float32\[515, 64\]"):
    build(config_lib.resolve(c, 8))
