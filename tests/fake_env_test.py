"""The fake pixel task honours the env contract and runs under brax's own training wrappers."""

import jax
import jax.numpy as jnp
import numpy as np
from brax.envs.wrappers import training as brax_training

from envs import registry
from envs.base import image_key
from envs.fake import COLOURS, FakeReach


def test_contract_reset_step_vmap_and_image_orientation():
  env = registry.make("fake_reach", image_size=16, cameras=("agentview",))
  assert env.observation_size == {"image_agentview": (16, 16, 3), "task_id": (), "proprio": (2,)}
  states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 5))
  assert states.obs[image_key("agentview")].dtype == jnp.uint8
  assert states.obs[image_key("agentview")].shape == (5, 16, 16, 3)
  nxt = jax.jit(jax.vmap(env.step))(states, jnp.ones((5, 2)))
  np.testing.assert_allclose(nxt.pipeline_state.pos, states.pipeline_state.pos + 0.1, atol=1e-6)
  # the red target sits at x = +0.3 (right of centre), y = 0: its pixels are in the right half
  img = np.asarray(env.render(jax.tree_util.tree_map(lambda x: x[0], states.pipeline_state)))
  red = np.argwhere((img[..., 0] > 200) & (img[..., 1] < 80))
  assert red[:, 1].min() >= 8 and abs(red[:, 0].mean() - 7.5) < 1.0
  assert env.instructions[0] == f"reach the {COLOURS[0]} target"


def test_success_reward_done_and_expert_solves():
  env = FakeReach(image_size=8)
  s = env.reset(jax.random.PRNGKey(3))
  step = jax.jit(env.step)
  total = 0.0
  for _ in range(8):
    s = step(s, env.expert_action(s))
    total += float(s.reward)
  assert bool(s.info["success"]) and float(s.done) == 1.0 and total == 1.0


def test_nan_action_ends_only_that_episode_as_failure():
  env = FakeReach(image_size=8)
  s = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(1), 3))
  a = jnp.zeros((3, 2)).at[1].set(jnp.nan)
  n = jax.vmap(env.step)(s, a)
  assert bool(n.info["unstable"][1]) and float(n.done[1]) == 1.0 and not bool(n.info["success"][1])
  assert np.all(np.isfinite(np.asarray(n.pipeline_state.pos)))
  np.testing.assert_array_equal(np.asarray(n.pipeline_state.pos)[[0, 2]], np.asarray(s.pipeline_state.pos)[[0, 2]])
  assert not bool(n.info["unstable"][0]) and not bool(n.info["unstable"][2])


def test_brax_training_wrappers_run_unchanged():
  env = brax_training.wrap(FakeReach(image_size=8), episode_length=5)
  s = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(0), 4))
  step = jax.jit(env.step)
  for _ in range(6):
    s = step(s, jnp.zeros((4, 2)))
  # the episode limit fired at step 5 and auto-reset restarted the count
  np.testing.assert_array_equal(s.info["steps"], 1)
  assert s.obs["image_agentview"].shape == (4, 8, 8, 3)
