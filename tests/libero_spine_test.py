"""The spine, whole: physics, rendering, policy sampling, reward and update in ONE compiled step on
the MJX bowl-on-plate scene, with dynamic sampling on and a real GRPO gradient, the same result on 1
and 8 devices and no recompilation.

A random policy never puts the bowl on the plate, so every group would be dropped and the update
would be empty. The test task keeps the scene, cameras and physics and swaps only the goal for one a
random policy reaches in some rollouts of a group and not in others ("the gripper is 3 cm below its
home height": LIBERO's controller moves the gripper at most about 1.5 cm per control step): groups are mixed, GRPO's gradient is non-zero and depends on the rendered pixels.
"""

import jax
import numpy as np

from configs.default import get_config
from envs import registry
from envs.tasks.libero_env import LiberoTask
from envs.tasks.spec import BOWL_ON_PLATE
from vla_rl_jax import config as config_lib
from vla_rl_jax.builders import build
from vla_rl_jax.train_step import make_train_step

LR = 1e-4
DROP = 0.03  # m below the home TCP height (uniform random actions, 16 steps: 42% of episodes)


class _ReachDown(LiberoTask):
  """bowl-on-plate scene; success once the TCP is DROP below its home height."""

  def __init__(self, **kwargs):
    super().__init__(BOWL_ON_PLATE, **kwargs)
    z0 = float(self.home_tcp_pos[2])
    self._goal = lambda data: self.tcp_pos(data)[2] < z0 - DROP


def make_reach_down(*, image_size, cameras, **kwargs):
  return _ReachDown(cameras=cameras, image_size=(image_size, image_size), **kwargs)


registry.register("libero_reach_down_test", f"{__name__}:make_reach_down")


def spine_config(num_devices):
  c = get_config("variant=tiny,env=libero_reach_down_test")
  c.env.episode_length = 16
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
  c.rl.shuffle_blocks = 8          # the same shuffle on 1 and 8 devices
  # Adam's first steps are lr * sign(g): a weight whose gradient is ~0 flips sign with reduction
  # order (1 vs 8 devices) and moves by 2 lr; a small lr keeps that noise out of later minibatches'
  # metrics while every weight still moves by ~lr.
  c.optim.learning_rate = LR
  assert c.rl.dynamic_sampling and c.rl.oversample == 2  # the LIBERO default: oversampling mode
  return config_lib.resolve(c, num_devices)


def run(devices, num_steps=2):
  cfg = spine_config(len(devices))
  b = build(cfg, devices=devices)
  state, stats = b.init_fn()
  init = jax.device_get(state.params)
  step = make_train_step(b)
  metrics, params = [], []
  for _ in range(num_steps):
    state, stats, m = step(state, stats)
    metrics.append(jax.device_get(m))
    params.append(jax.device_get(state.params))
  return step, init, params, metrics


# Metrics of minibatches after the first update see the weights Adam flipped (above): a few tokens
# cross the clip boundary (clip_frac counts them), norms move by < 1%. Everything the rollout and the
# first minibatch produce must agree to float rounding.
_TOL = {"clip_frac": dict(atol=2e-3), "approx_kl_old": dict(atol=2e-4),
        "grad_norm": dict(rtol=1e-2), "ratio_max_dev": dict(rtol=1e-2)}


def _flat(tree):
  return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(tree)])


def test_fused_step_on_mjx_task_1_vs_8_devices():
  step1, init, params1, m1 = run(jax.devices()[:1])
  step8, _, params8, m8 = run(jax.devices()[:8])
  assert step1._cache_size() == 1 and step8._cache_size() == 1  # compiled once each
  for a in m1 + m8:
    assert all(np.isfinite(v) for v in a.values()) and a["first_ratio_dev"] < 1e-5
  # The first step is compared metric by metric. The second starts from weights that differ by
  # Adam's sign flips (below), which can change a sampled token and so a rollout: not compared.
  for a, b in zip(m1[:1], m8[:1]):
    assert a["unstable_frac"] == 0.0
    # mixed groups: some rollouts reach the goal, some do not, and the kept groups all carry signal
    assert 0.1 < a["success_rate"] < 0.9, a["success_rate"]
    assert a["kept_valid_group_frac"] > 0.5 and a["adv_abs_mean"] > 0.3
    assert a["updates_applied"] >= 1 and a["grad_norm"] > 1e-3
    assert a["first_ratio_dev"] < 1e-5
    for k in a:
      np.testing.assert_allclose(b[k], a[k], err_msg=k, **_TOL.get(k, dict(rtol=2e-4, atol=2e-5)))
  lr = LR
  moved = np.abs(_flat(params1[0]) - _flat(init))
  diff = np.abs(_flat(params8[0]) - _flat(params1[0]))
  # the update moved most parameters by about lr per Adam step (a skipped or zero update fails)
  assert np.mean(moved > 0.1 * lr) > 0.5, np.mean(moved > 0.1 * lr)
  # 1 vs 8 devices: reduction order only. Adam divides tiny gradients by tiny second moments, so a
  # few near-zero-gradient weights may differ by up to ~lr; a real bug (wrong data, wrong shuffle,
  # wrong mean) moves a large fraction of them.
  assert diff.max() < 4 * lr and np.mean(diff > 0.1 * lr) < 0.03, (diff.max(), np.mean(diff > 0.1 * lr))
