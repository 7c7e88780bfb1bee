"""The fused train step: compiles once, same metrics on 1 and 8 devices, shardings preserved."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from configs.default import get_config
from envs.fake import FakeReach
from vla_rl_jax import config as config_lib
from vla_rl_jax import sharding
from vla_rl_jax.builders import build
from vla_rl_jax.models import tokenizer
from envs import schema
from vla_rl_jax.rl import losses as losses_lib
from vla_rl_jax.rl.registry import register_loss
from vla_rl_jax.rollout import call_obs, rollout
from vla_rl_jax.train_step import keep_groups, local_order, make_train_step


def small_config(num_devices, **mesh):
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
  c.rl.shuffle_blocks = 8  # shuffles stay within 8 blocks on every mesh: results mesh-independent
  for k, v in mesh.items():
    setattr(c.mesh, k, v)
  return config_lib.resolve(c, num_devices)


def run_steps(num_steps, devices, **mesh):
  cfg = small_config(len(devices), **mesh)
  b = build(cfg, devices=devices)
  state, stats = b.init_fn()
  step = make_train_step(b)
  out = []
  for _ in range(num_steps):
    state, stats, m = step(state, stats)
    out.append(jax.device_get(m))
  return b, step, state, stats, out


@pytest.fixture(scope="module")
def one_device():
  return run_steps(2, jax.devices()[:1])


def test_compiles_once_and_first_ratio_is_one(one_device):
  _, step, state, _, metrics = one_device
  assert step._cache_size() == 1  # the second call did not recompile
  assert int(state.step) == 2
  for m in metrics:
    assert m["first_ratio_dev"] < 1e-5
    assert all(np.isfinite(v) for v in m.values())
    assert 0.0 <= m["success_rate"] <= 1.0


@pytest.mark.parametrize("mesh", [dict(data=8, fsdp=1), dict(data=2, fsdp=4)])
def test_same_metrics_on_8_devices_and_shardings_preserved(one_device, mesh):
  _, _, state1, stats1, m1 = one_device
  b8, step8, state8, stats8, m8 = run_steps(2, jax.devices()[:8], **mesh)
  assert len(jax.devices()) == 8
  for a, b in zip(m1, m8):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_allclose(b[k], a[k], rtol=2e-4, atol=2e-5, err_msg=k)
  jax.tree_util.tree_map(
      lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=1e-4),  # Adam amplifies reduction-order noise where grads ~ 0; a real bug moves params by ~lr = 3e-3
      state1.params, state8.params)
  # outputs come back with exactly the shardings they went in with (donation works, no resharding)
  def same(arr, sh):
    assert arr.sharding.is_equivalent_to(sh, arr.ndim), (arr.sharding, sh)
  jax.tree_util.tree_map(same, state8, b8.state_shardings)
  jax.tree_util.tree_map(same, stats8, b8.env_stats_shardings)
  if mesh["fsdp"] > 1:  # parameters really are split over fsdp
    specs = [s.spec for s in jax.tree_util.tree_leaves(b8.state_shardings.params)]
    assert any("fsdp" in tuple(sp) for sp in specs)
  assert step8._cache_size() == 1


class _SolvedReach(FakeReach):
  """fake_reach where every step is a success (the schema refuses a radius that does this: a task
  solved before the policy acts is nonsense in a run, and exactly what these tests need)."""

  def _success(self, ps, task_id):
    return jnp.asarray(True)


def _solved(b):
  return dataclasses.replace(b, env=_SolvedReach(image_size=b.cfg.env.image_size,
                                                 cameras=(b.cfg.env.camera,)))


def _rollout(radius, temperature=1.6):
  c = get_config("variant=tiny")
  c.env.kwargs = {"radius": radius} if radius else {}
  cfg = config_lib.resolve(c, 1)
  b = build(cfg, devices=jax.devices()[:1])
  if radius is None:
    b = _solved(b)
  state, _ = b.init_fn()
  fn = jax.jit(lambda p, k: rollout(b.env, b.policy, p, k, text_table=b.text_table, num_prompts=4,
                                    group_size=3, num_calls=cfg.num_calls, temperature=temperature,
                                    camera=cfg.env.camera))
  return cfg, b, fn(state.params, jax.random.PRNGKey(5))


def test_rollout_masks_and_early_exit():
  # every episode succeeds on its first step -> one policy call, one valid step each
  cfg, _, (traj, calls) = _rollout(None)
  d, k = 2, cfg.policy.chunk_size
  assert int(calls) == 1
  np.testing.assert_array_equal(traj.reward, 1.0)
  np.testing.assert_array_equal(traj.length, 1)
  mask = np.asarray(traj.token_mask)  # [N, C, K*D]
  np.testing.assert_array_equal(mask[:, 0, :d], 1.0)
  assert mask[:, 0, d:].sum() == 0 and mask[:, 1:].sum() == 0
  # radius ~0: nobody succeeds -> every call runs, every token is valid, reward 0
  cfg, _, (traj, calls) = _rollout(1e-6)
  assert int(calls) == cfg.num_calls
  np.testing.assert_array_equal(traj.reward, 0.0)
  np.testing.assert_array_equal(traj.length, cfg.env.episode_length)
  np.testing.assert_array_equal(traj.token_mask, 1.0)


def test_rollout_groups_share_initial_state_and_masks_are_prefixes():
  cfg, b, (traj, _) = _rollout(0.15)
  n = traj.reward.shape[0]
  first = jax.tree_util.tree_map(lambda x: x[:, 0], traj.frames)
  obs0 = call_obs(b.env, first, traj.proprio[:, 0], b.text_table[traj.task_id], cfg.env.camera)
  img0 = np.asarray(obs0.image).reshape(4, 3, -1)
  for grp in img0:  # the G rollouts of a group start from the identical state
    np.testing.assert_array_equal(grp[0], grp[1])
    np.testing.assert_array_equal(grp[0], grp[2])
  step_mask = np.asarray(traj.token_mask).reshape(n, -1, 2)[..., 0]  # [N, T] per action step
  assert np.all(np.diff(step_mask, axis=1) <= 0)  # once an episode ends, it stays ended
  np.testing.assert_array_equal(step_mask.sum(1), traj.length)
  # an episode shorter than the horizon ended because it succeeded
  short = np.asarray(traj.length) < cfg.env.episode_length
  assert np.all(np.asarray(traj.reward)[short] == 1.0)


def test_local_order_packs_survivors_first_within_each_shard():
  # 2 shards of 6 trajectories; shard 0 holds 3 survivors, shard 1 holds 1
  w = jnp.array([0, 1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0], jnp.float32)
  order = np.asarray(local_order(jax.random.PRNGKey(0), w, 2))
  assert order.shape == (2, 6)
  for s in range(2):
    assert sorted(order[s]) == list(range(6))        # a permutation of the shard's OWN rows
  wl = np.asarray(w).reshape(2, 6)
  picked = np.take_along_axis(wl, order, 1)
  np.testing.assert_array_equal(picked, [[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
  # shuffled: another key gives another order among the survivors or the rest
  assert any(not np.array_equal(order, np.asarray(local_order(jax.random.PRNGKey(k), w, 2)))
             for k in range(1, 5))


def test_keep_groups_takes_informative_groups_per_shard_and_reports_shortfall():
  # 2 shards x 4 groups (G = 2); shard 0 has 3 informative groups, shard 1 has 1; keep 2 per shard
  informative = jnp.array([1, 0, 1, 1, 0, 0, 1, 0], bool)
  rows, short = keep_groups(informative, 2, 2, 2)
  rows, short = np.asarray(rows), np.asarray(short)
  np.testing.assert_array_equal(rows[0], [0, 1, 4, 5])     # groups 0 and 2 of shard 0
  np.testing.assert_array_equal(rows[1][:2], [4, 5])        # shard 1's only informative group
  assert set(rows[1][2:] // 2) <= {0, 1, 3}                 # filled with an uninformative group
  np.testing.assert_array_equal(short, [0, 1])


def test_step_with_every_group_dropped_changes_nothing():
  """All episodes succeed -> every group is uniform -> no update: params and Adam state unchanged."""
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
  cfg = config_lib.resolve(c, 1)
  b = _solved(build(cfg, devices=jax.devices()[:1]))
  state, stats = b.init_fn()
  before = jax.device_get((state.params, state.opt_state))
  state, stats, m = make_train_step(b)(state, stats)
  assert float(m["success_rate"]) == 1.0 and float(m["valid_group_frac"]) == 0.0
  assert float(m["updates_applied"]) == 0.0
  jax.tree_util.tree_map(np.testing.assert_array_equal, before,
                         jax.device_get((state.params, state.opt_state)))
  assert int(state.step) == 1


@register_loss("test_marked_ppo", schema.Float("marker", 1.0, "reported as a metric", lo=0.0))
def _marked_ppo(inp, cfg, *, marker):
  """ppo_clip with one ratio per chunk and dual clip: the layout the train step passes is used."""
  loss, m = losses_lib.ppo_clip(inp, cfg, ratio_level="chunk", dual_clip=3.0)
  _LAYOUT_SEEN.append((inp.action_dim, inp.chunk_size, inp.logp.shape[-1]))  # at trace time
  return loss, dict(m, marker=jnp.float32(marker))


_LAYOUT_SEEN = []


def test_step_with_an_outside_loss_kl_epochs_and_reinforce_pp():
  """A loss registered here, its option, KL to the starting policy (kept in the state), two PPO
  epochs and the REINFORCE++ advantage, in one fused step."""
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
  c.rl.loss, c.rl.advantage = "test_marked_ppo", "reinforce_pp"
  c.rl.loss_kwargs.marker = 7.0        # a field the ConfigDict did not hold: Python adds it
  c.rl.kl_coef, c.rl.num_epochs, c.rl.dynamic_sampling = 0.1, 2, False
  cfg = config_lib.resolve(c, 1)
  assert cfg.rl.loss_kwargs == (("marker", 7.0),)
  b = build(cfg, devices=jax.devices()[:1])
  state, stats = b.init_fn()
  assert state.ref_params is not None
  before = jax.device_get(state.params)
  state, stats, m = make_train_step(b)(state, stats)
  m = jax.device_get(m)
  assert float(m["marker"]) == 7.0
  d, k = b.env.action_size, cfg.policy.chunk_size
  assert set(_LAYOUT_SEEN) == {(d, k, cfg.num_calls * k * d)}
  assert float(m["updates_applied"]) == 2 * cfg.num_minibatches   # every minibatch, both epochs
  assert float(m["first_ratio_dev"]) < 1e-5 and "kl_ref" in m and "clip_frac" in m
  assert all(np.isfinite(v) for v in m.values())
  moved = jax.tree_util.tree_map(lambda x, y: np.any(x != y), before, jax.device_get(state.params))
  assert any(jax.tree_util.tree_leaves(moved))
  # the reference stays the starting policy
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, jax.device_get(state.ref_params))


class _PhysicsOnlyReach(FakeReach):
  """fake_reach whose rendering step refuses to be traced: the rollout must step physics only."""

  def step(self, state, action):
    raise AssertionError("the rollout called env.step (a render per control step)")

  def observe(self, state):
    raise AssertionError("the rollout called env.observe")


def _reach_rollout(mesh_shape, policy_microbatch, store="scene"):
  c = get_config("variant=tiny")
  c.env.kwargs = {"radius": 1e-6}   # no episode ends: every call is a full chunk
  cfg = config_lib.resolve(c, 1)
  b = build(cfg, devices=jax.devices()[:1])
  env = _PhysicsOnlyReach(image_size=cfg.env.image_size, radius=1e-6)
  devices = np.asarray(jax.devices()[:int(np.prod(mesh_shape))]).reshape(mesh_shape)
  mesh = Mesh(devices, sharding.AXES)
  state, _ = b.init_fn()
  params = jax.device_put(state.params, sharding.replicated(mesh))
  fn = jax.jit(lambda p, k: rollout(env, b.policy, p, k, text_table=b.text_table, num_prompts=8,
                                    group_size=2, num_calls=cfg.num_calls, temperature=1.6,
                                    camera=cfg.env.camera, store=store,
                                    policy_microbatch=policy_microbatch, mesh=mesh))
  return cfg, env, b, fn(params, jax.random.PRNGKey(3))


def test_rollout_renders_once_per_call_at_the_chunk_boundary():
  cfg, env, b, (traj, calls) = _reach_rollout((1, 1, 1), 0)
  assert int(calls) == cfg.num_calls
  pos = np.asarray(traj.frames["scene"].pos)               # [N, C, 2]: the state each call saw
  actions = np.asarray(tokenizer.bins_to_actions(traj.tokens)).reshape(
      pos.shape[0], cfg.num_calls, cfg.policy.chunk_size, env.action_size)
  # call c+1 sees the state after ALL K actions of call c (not a stale or mid-chunk frame); the
  # agent moves step_size * a per control step, clipped to the [-1, 1] box
  want = pos[:, 0]
  for c in range(cfg.num_calls - 1):
    for k in range(cfg.policy.chunk_size):
      want = np.clip(want + env.step_size * actions[:, c, k], -1.0, 1.0)
    np.testing.assert_allclose(pos[:, c + 1], want, atol=1e-5)
  # and the image the policy read at each call is the render of that state
  obs = call_obs(env, jax.tree_util.tree_map(lambda x: x[:, 2], traj.frames), traj.proprio[:, 2],
                 b.text_table[traj.task_id], cfg.env.camera)
  want_img = jax.vmap(env.draw)(jax.tree_util.tree_map(lambda x: x[:, 2], traj.frames["scene"]))
  np.testing.assert_array_equal(obs.image, want_img)


@pytest.mark.parametrize("store", ["scene", "images"])
def test_rollout_same_on_8_shards_and_in_micro_batches(store):
  """Per-trajectory sampling keys: neither the mesh nor policy micro-batching changes a rollout."""
  _, _, _, (ref, _) = _reach_rollout((1, 1, 1), 0, store)
  for mesh_shape, mb in (((8, 1, 1), 1), ((2, 4, 1), 0), ((1, 1, 1), 4)):
    _, _, _, (traj, _) = _reach_rollout(mesh_shape, mb, store)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), ref, traj)
