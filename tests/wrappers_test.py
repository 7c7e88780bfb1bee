"""Wrappers: brax's own training wrappers run the task unchanged; ours (vmap / episode limit /
auto-reset / domain randomisation) keep brax's conventions and restore the controller on reset."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.wrappers import training as brax_training

from envs import base, wrappers
from envs.tasks.libero_env import LiberoTask


@pytest.fixture(scope="module")
def env():
  return LiberoTask(cameras=())


@pytest.mark.slow   # brax's wrappers on the contract are in make test (fake_env_test); this is the MJX task
def test_brax_training_wrap_runs_task(env):
  """brax.envs.wrappers.training.wrap (vmap, episode limit 3, auto-reset) for 5 steps, jitted."""
  wrapped = brax_training.wrap(env, episode_length=3)
  b = 2

  @jax.jit
  def run(rng):
    s = wrapped.reset(jax.random.split(rng, b))
    def body(s, t):
      a = jnp.zeros((b, env.action_size)).at[:, 2].set(-0.5).at[:, 6].set(-1.0)
      s = wrapped.step(s, a)
      return s, (s.done, s.pipeline_state.mocap_pos[:, 0], s.info["steps"])
    return jax.lax.scan(body, s, jnp.arange(5))

  first = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), b))
  s, (done, target, steps) = jax.device_get(run(jax.random.PRNGKey(0)))
  assert s.obs["proprio"].shape == (b, env.proprio_size)
  assert not base.nonfinite(s.pipeline_state.qpos)
  np.testing.assert_array_equal(done[:, 0], [0, 0, 1, 0, 0])   # [T, B]
  np.testing.assert_array_equal(done[2], [1, 1])           # episode limit at step 3
  # after the auto-reset the controller target is back at the home pose (it lives in mjx.Data)
  np.testing.assert_allclose(target[2], np.asarray(first.pipeline_state.mocap_pos[:, 0]), atol=1e-6)
  assert target[1][0, 2] < target[0][0, 2] < np.asarray(first.pipeline_state.mocap_pos[0, 0, 2])


class _Counter(base.Env):
  """Cheap pure env for wrapper logic: pipeline_state counts steps; done when it reaches `goal`."""

  def __init__(self, goal=4):
    self.goal = goal

  instructions = ("count",)
  cameras = ()
  image_size = (0, 0)
  action_size = 1

  @property
  def observation_size(self):
    return {"task_id": ()}

  def reset(self, rng):
    z = jnp.zeros(())
    return base.State(jnp.zeros(()), {"task_id": jnp.zeros((), jnp.int32)}, z, z, {},
                      {"success": jnp.asarray(False), "unstable": jnp.asarray(False)})

  def step(self, state, action):
    c = state.pipeline_state + 1.0
    success = c >= self.goal
    return state.replace(pipeline_state=c, reward=success.astype(jnp.float32),
                         done=success.astype(jnp.float32),
                         info={**state.info, "success": success})


def test_our_wrappers_episode_limit_and_auto_reset():
  env = wrappers.wrap(_Counter(goal=4), episode_length=6, batch_size=3)
  s = env.reset(jax.random.PRNGKey(0))
  counts, dones, truncs = [], [], []
  for _ in range(9):
    s = env.step(s, jnp.zeros((3, 1)))
    counts.append(np.asarray(s.pipeline_state)); dones.append(np.asarray(s.done))
    truncs.append(np.asarray(s.info["truncation"]))
  counts, dones = np.array(counts)[:, 0], np.array(dones)[:, 0]
  # success at the 4th step -> done, auto-reset to 0, then success again 4 steps later
  np.testing.assert_array_equal(dones, [0, 0, 0, 1, 0, 0, 0, 1, 0])
  np.testing.assert_array_equal(counts, [1, 2, 3, 0, 1, 2, 3, 0, 1])
  assert np.all(np.array(truncs) == 0)
  # a goal beyond the limit: truncation at 6
  env = wrappers.wrap(_Counter(goal=100), episode_length=6, batch_size=2)
  s = env.reset(jax.random.PRNGKey(0))
  for t in range(6):
    s = env.step(s, jnp.zeros((2, 1)))
  np.testing.assert_array_equal(np.asarray(s.done), [1, 1])
  np.testing.assert_array_equal(np.asarray(s.info["truncation"]), [1, 1])


@pytest.mark.slow
def test_domain_randomization_friction(env):
  """Per-env friction through a batched model closed over by the step."""
  b = 4
  dr = wrappers.wrap(env, episode_length=10, batch_size=b,
                     randomize_fn=wrappers.friction_randomizer(0.5, 1.5), rng=jax.random.PRNGKey(3))
  s = jax.jit(dr.reset)(jax.random.PRNGKey(0))
  s = jax.jit(dr.step)(s, jnp.zeros((b, env.action_size)))
  assert not base.nonfinite(s.pipeline_state.qpos)
  f = np.asarray(dr.env._model.pair_friction[:, 0, 0])
  assert f.shape == (b,) and len(set(np.round(f, 6))) == b
