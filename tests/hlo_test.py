"""Data movement in the compiled train step: on 8 devices no collective moves the rollout buffer.

Trajectories live sharded over data x fsdp from reset to update (ARCHITECTURE.md): only parameters,
gradients and scalars may travel. The checker reads the compiled HLO's collectives and flags any
whose operand is (part of) the stored frames or tokens; it is shown to flag a step that shuffles
with a global x[perm], so it can fail.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from vla_rl_jax import config as config_lib
from vla_rl_jax import train_step as train_step_lib
from vla_rl_jax.builders import build

_COLLECTIVE = re.compile(r"^\s*(?:ROOT )?%\S+ = (.+?) (all-gather|all-to-all|collective-permute|"
                         r"reduce-scatter|all-reduce)(?:-start)?\(")
_ARRAY = re.compile(r"([a-z]+[0-9]*)\[([0-9,]*)\]")


def collectives(hlo: str) -> list[tuple[str, list[tuple[str, tuple[int, ...]]]]]:
  """(opcode, [(dtype, shape), ...]) of every collective in an HLO module's text."""
  out = []
  for line in hlo.splitlines():
    m = _COLLECTIVE.match(line)
    if m:
      arrays = [(t, tuple(int(d) for d in s.split(",") if d)) for t, s in _ARRAY.findall(m.group(1))]
      out.append((m.group(2), arrays))
  return out


def buffer_moves(hlo: str, cfg, env) -> list:
  """Collectives that carry observation or token data of the rollout buffer.

  Flags: any uint8 array (images); any batched array whose trailing dims are those of a stored
  image (H, W, 3), of the patchified image the model reads (patches, patch * patch * 3), or of a
  trajectory's per-call tokens (C, L).
  """
  h, w = env.image_size
  p = cfg.model.patch_size
  l = cfg.policy.chunk_size * env.action_size
  # with at least one leading (batch) dim, so that a 2-D weight of a coinciding shape is not taken
  # for activations
  trailing = [(h, w, 3), ((h // p) * (w // p), p * p * 3), (cfg.num_calls, l)]
  bad = []
  for op, arrays in collectives(hlo):
    for dtype, shape in arrays:
      if dtype == "u8" or any(len(shape) > len(t) and shape[-len(t):] == t for t in trailing):
        bad.append((op, dtype, shape))
  return bad


def compiled_hlo(mesh: dict, store: str = "images", **rl) -> tuple[str, object, object]:
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
  c.rollout.store = store
  for k, v in mesh.items():
    c.mesh[k] = v
  for k, v in rl.items():
    c.rl[k] = v
  cfg = config_lib.resolve(c, 8)
  b = build(cfg, devices=jax.devices()[:8])
  state, stats = b.init_fn()
  hlo = train_step_lib.make_train_step(b).lower(state, stats).compile().as_text()
  return hlo, cfg, b.env


@pytest.mark.parametrize("mesh", [dict(data=8, fsdp=1), dict(data=2, fsdp=4)])
def test_no_collective_moves_the_rollout_buffer(mesh):
  hlo, cfg, env = compiled_hlo(mesh)
  ops = collectives(hlo)
  assert ops, "expected gradient all-reduces on 8 devices"
  assert buffer_moves(hlo, cfg, env) == [], ops


def test_per_call_accumulation_moves_no_buffer_either():
  """rl.grad_accum="per_call" re-slices the minibatch into micro-batches of 1 trajectory per batch
  shard and calls: each shard keeps scoring its own rows (FSDP: the accumulator is sharded)."""
  hlo, cfg, env = compiled_hlo(dict(data=2, fsdp=4), grad_accum="per_call", micro_batch_size=1)
  assert buffer_moves(hlo, cfg, env) == [], collectives(hlo)


def test_checker_flags_a_global_shuffle(monkeypatch):
  """The pre-fix shuffle (x[perm] over the sharded buffer) is caught by the same checker."""
  def global_take(tree, rows, mesh):
    blocks, k = rows.shape
    n_blk = jax.tree_util.tree_leaves(tree)[0].shape[0] // blocks
    idx = (rows + jnp.arange(blocks)[:, None] * n_blk).reshape(-1)
    # a different block's rows: the buffer must cross devices (what x[perm] did)
    idx = jnp.roll(idx, idx.shape[0] // 2)
    return jax.tree_util.tree_map(lambda x: x[idx], tree)
  monkeypatch.setattr(train_step_lib, "take_local", global_take)
  hlo, cfg, env = compiled_hlo(dict(data=8, fsdp=1))
  moves = buffer_moves(hlo, cfg, env)
  assert moves, collectives(hlo)
  assert any(dtype == "u8" for _, dtype, _ in moves)


def test_collective_parser_on_known_text():
  hlo = ("  %all-gather.3 = u8[32,4,8,8,3]{4,3,2,1,0} all-gather(u8[4,4,8,8,3]{4,3,2,1,0} %p), "
         "dimensions={0}\n"
         "  %ar = (f32[64]{0}, f32[]) all-reduce-start(f32[64]{0} %a, f32[] %b), to_apply=%add\n"
         "  %x = f32[3]{0} add(f32[3]{0} %c, f32[3]{0} %d)\n")
  ops = collectives(hlo)
  assert ops == [("all-gather", [("u8", (32, 4, 8, 8, 3))]),
                 ("all-reduce", [("f32", (64,)), ("f32", ())])]
  np.testing.assert_equal(len(ops), 2)
