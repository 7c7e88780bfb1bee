"""The spine, whole: physics, rendering, policy sampling, reward and update in ONE compiled step on
the MJX bowl-on-plate task, with the same result on 1 and 8 devices and no recompilation."""

import jax
import numpy as np

from configs.default import get_config
from vla_rl_jax import config as config_lib
from vla_rl_jax.builders import build
from vla_rl_jax.train_step import make_train_step


def run(devices, num_steps=2):
  c = get_config("variant=tiny,env=libero_bowl_on_plate")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 4, 2, 8
  c.env.episode_length = 16
  # Random policies never succeed here, so GRPO's gradient is 0: an entropy bonus without dynamic
  # sampling makes the update depend on every rendered pixel, so the comparison below means something.
  c.rl.dynamic_sampling, c.rl.entropy_coef = False, 0.01
  cfg = config_lib.resolve(c, len(devices))
  b = build(cfg, devices=devices)
  state, stats = b.init_fn()
  step = make_train_step(b)
  metrics = []
  for _ in range(num_steps):
    state, stats, m = step(state, stats)
    metrics.append(jax.device_get(m))
  return step, state, metrics


def test_fused_step_on_mjx_task_1_vs_8_devices():
  step1, state1, m1 = run(jax.devices()[:1])
  step8, state8, m8 = run(jax.devices()[:8])
  assert step1._cache_size() == 1 and step8._cache_size() == 1  # compiled once each
  for a, b in zip(m1, m8):
    assert a["unstable_frac"] == 0.0 and a["episode_length"] == 16.0
    assert a["updates_applied"] == 1.0 and a["first_ratio_dev"] < 1e-5
    for k in a:
      np.testing.assert_allclose(b[k], a[k], rtol=2e-4, atol=2e-5, err_msg=k)
  # Adam divides tiny gradients by tiny second moments, so reduction-order noise can move a few
  # near-zero-gradient weights by up to ~lr per step; a real bug moves most weights.
  diffs = np.concatenate([np.abs(np.asarray(x) - np.asarray(y)).ravel() for x, y in zip(
      jax.tree_util.tree_leaves(state1.params), jax.tree_util.tree_leaves(state8.params))])
  lr = get_config().optim.learning_rate
  assert diffs.max() < 2 * lr * 2 and np.mean(diffs > 1e-4) < 0.01, (diffs.max(), np.mean(diffs > 1e-4))
  # the update happened: parameters moved away from their initial values
  init = build(config_lib.resolve(get_config("variant=tiny,env=libero_bowl_on_plate"), 1),
               devices=jax.devices()[:1]).init_fn()[0].params
  moved = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()), state1.params, init))
  assert max(moved) > 1e-4
