"""The fused train step: compiles once, same metrics on 1 and 8 devices, shardings preserved."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from vla_rl_jax import config as config_lib
from vla_rl_jax import sharding
from vla_rl_jax.builders import build
from vla_rl_jax.rollout import rollout
from vla_rl_jax.train_step import make_train_step, minibatch_order


def small_config(num_devices, **mesh):
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
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


def _rollout(radius, temperature=1.6):
  c = get_config("variant=tiny")
  c.env.kwargs = {"radius": radius}
  cfg = config_lib.resolve(c, 1)
  b = build(cfg, devices=jax.devices()[:1])
  state, _ = b.init_fn()
  fn = jax.jit(lambda p, k: rollout(b.env, b.policy, p, k, text_table=b.text_table, num_prompts=4,
                                    group_size=3, num_calls=cfg.num_calls, temperature=temperature,
                                    camera=cfg.env.camera))
  return cfg, fn(state.params, jax.random.PRNGKey(5))


def test_rollout_masks_and_early_exit():
  # radius 3: every episode succeeds on its first step -> one policy call, one valid step each
  cfg, (traj, calls) = _rollout(3.0)
  d, k = 2, cfg.policy.chunk_size
  assert int(calls) == 1
  np.testing.assert_array_equal(traj.reward, 1.0)
  np.testing.assert_array_equal(traj.length, 1)
  mask = np.asarray(traj.token_mask)  # [N, C, K*D]
  np.testing.assert_array_equal(mask[:, 0, :d], 1.0)
  assert mask[:, 0, d:].sum() == 0 and mask[:, 1:].sum() == 0
  # radius ~0: nobody succeeds -> every call runs, every token is valid, reward 0
  cfg, (traj, calls) = _rollout(1e-6)
  assert int(calls) == cfg.num_calls
  np.testing.assert_array_equal(traj.reward, 0.0)
  np.testing.assert_array_equal(traj.length, cfg.env.episode_length)
  np.testing.assert_array_equal(traj.token_mask, 1.0)


def test_rollout_groups_share_initial_state_and_masks_are_prefixes():
  cfg, (traj, _) = _rollout(0.15)
  n = traj.reward.shape[0]
  img0 = np.asarray(traj.obs.image[:, 0]).reshape(4, 3, -1)
  for grp in img0:  # the G rollouts of a group start from the identical state
    np.testing.assert_array_equal(grp[0], grp[1])
    np.testing.assert_array_equal(grp[0], grp[2])
  step_mask = np.asarray(traj.token_mask).reshape(n, -1, 2)[..., 0]  # [N, T] per action step
  assert np.all(np.diff(step_mask, axis=1) <= 0)  # once an episode ends, it stays ended
  np.testing.assert_array_equal(step_mask.sum(1), traj.length)
  # an episode shorter than the horizon ended because it succeeded
  short = np.asarray(traj.length) < cfg.env.episode_length
  assert np.all(np.asarray(traj.reward)[short] == 1.0)


def test_minibatch_order_packs_survivors_first_in_strided_layout():
  w = jnp.array([0, 1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0], jnp.float32)  # 5 survivors, N = 12
  mb, num_mb = 4, 3
  perm = np.asarray(minibatch_order(jax.random.PRNGKey(0), w, mb, num_mb))
  assert sorted(perm) == list(range(12))
  minibatches = perm.reshape(mb, num_mb).T  # the train step's split: minibatch i = column i
  np.testing.assert_array_equal(np.asarray(w)[minibatches[0]], 1)  # full of survivors
  assert np.asarray(w)[minibatches[1]].sum() == 1 and np.asarray(w)[minibatches[2]].sum() == 0


def test_step_with_every_group_dropped_changes_nothing():
  """All episodes succeed -> every group is uniform -> no update: params and Adam state unchanged."""
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
  c.env.kwargs.radius = 3.0
  cfg = config_lib.resolve(c, 1)
  b = build(cfg, devices=jax.devices()[:1])
  state, stats = b.init_fn()
  before = jax.device_get((state.params, state.opt_state))
  state, stats, m = make_train_step(b)(state, stats)
  assert float(m["success_rate"]) == 1.0 and float(m["valid_group_frac"]) == 0.0
  assert float(m["updates_applied"]) == 0.0
  jax.tree_util.tree_map(np.testing.assert_array_equal, before,
                         jax.device_get((state.params, state.opt_state)))
  assert int(state.step) == 1
