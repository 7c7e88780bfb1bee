"""Our own env wrappers (brax State compatible): vmap, episode limit, auto-reset, domain randomisation.

They follow brax's conventions (info["steps"], info["truncation"], info["first_pipeline_state"],
info["first_obs"]) so brax's own `brax.envs.wrappers.training.wrap` and ours are interchangeable;
ours also restore the task's own info entries (success / unstable / render params) on auto-reset.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
from brax.envs.base import Wrapper

from envs.base import State


class VmapWrapper(Wrapper):
  """Batched reset/step. reset takes keys [B, 2] (or one key and `batch_size`)."""

  def __init__(self, env, batch_size: Optional[int] = None):
    super().__init__(env)
    self.batch_size = batch_size

  def reset(self, rng: jax.Array) -> State:
    if self.batch_size is not None and rng.ndim == 1:
      rng = jax.random.split(rng, self.batch_size)
    return jax.vmap(self.env.reset)(rng)

  def step(self, state: State, action: jax.Array) -> State:
    return jax.vmap(self.env.step)(state, action)


class EpisodeWrapper(Wrapper):
  """Time limit: done once `episode_length` control steps have run (info["truncation"] = 1 then,
  unless the task itself ended the episode on that step)."""

  def __init__(self, env, episode_length: int, action_repeat: int = 1):
    super().__init__(env)
    self.episode_length = episode_length
    self.action_repeat = action_repeat

  def reset(self, rng: jax.Array) -> State:
    state = self.env.reset(rng)
    state.info["steps"] = jnp.zeros(rng.shape[:-1])
    state.info["truncation"] = jnp.zeros(rng.shape[:-1])
    return state

  def step(self, state: State, action: jax.Array) -> State:
    def f(s, _):
      nstate = self.env.step(s, action)
      return nstate, nstate.reward

    state, rewards = jax.lax.scan(f, state, (), self.action_repeat)
    state = state.replace(reward=jnp.sum(rewards, axis=0))
    steps = state.info["steps"] + self.action_repeat
    one = jnp.ones_like(state.done)
    zero = jnp.zeros_like(state.done)
    done = jnp.where(steps >= self.episode_length, one, state.done)
    state.info["truncation"] = jnp.where(steps >= self.episode_length, 1.0 - state.done, zero)
    state.info["steps"] = steps
    return state.replace(done=done)


class AutoResetWrapper(Wrapper):
  """Where done, the NEXT state is the episode's first state again (pipeline state, obs and the
  task's info entries), as brax does; the first state is kept in info."""

  _TASK_INFO = ("success", "unstable", "render")

  def reset(self, rng: jax.Array) -> State:
    state = self.env.reset(rng)
    state.info["first_pipeline_state"] = state.pipeline_state
    state.info["first_obs"] = state.obs
    state.info["first_task_info"] = {k: state.info[k] for k in self._TASK_INFO if k in state.info}
    return state

  def step(self, state: State, action: jax.Array) -> State:
    if "steps" in state.info:
      steps = jnp.where(state.done > 0, jnp.zeros_like(state.info["steps"]), state.info["steps"])
      state.info.update(steps=steps)
    state = state.replace(done=jnp.zeros_like(state.done))
    state = self.env.step(state, action)

    def where_done(x, y):
      done = state.done
      if done.shape and x.ndim > done.ndim:
        done = jnp.reshape(done, list(done.shape) + [1] * (x.ndim - done.ndim))
      return jnp.where(done > 0, x, y)

    ps = jax.tree.map(where_done, state.info["first_pipeline_state"], state.pipeline_state)
    obs = jax.tree.map(where_done, state.info["first_obs"], state.obs)
    first_task = state.info["first_task_info"]
    for k, v in first_task.items():
      if k == "render":
        state.info[k] = jax.tree.map(where_done, v, state.info[k])
    return state.replace(pipeline_state=ps, obs=obs)


class DomainRandomizationWrapper(Wrapper):
  """Per-environment model parameters (friction, masses, ...), vmapped with the state.

  `randomize_fn(mjx_model, rng) -> (batched_model, in_axes)` as in brax / MuJoCo Playground: the
  batched model is closed over (a constant of the compiled step, never a jit argument) and each
  environment steps with its own slice. Use INSTEAD of VmapWrapper. `friction_randomizer` below is
  the ready-made hook for the contact friction of the task's pairs.
  """

  def __init__(self, env, randomize_fn: Callable, rng: jax.Array, batch_size: int):
    super().__init__(env)
    self.batch_size = batch_size
    keys = jax.random.split(rng, batch_size)
    self._model, self._in_axes = randomize_fn(self.env.unwrapped.mjx_model, keys)

  def _env_fn(self, mjx_model):
    env = self.env
    env.unwrapped.mjx_model = mjx_model
    return env

  def reset(self, rng: jax.Array) -> State:
    if rng.ndim == 1:
      rng = jax.random.split(rng, self.batch_size)
    original = self.env.unwrapped.mjx_model

    def reset(m, r):
      return self._env_fn(m).reset(r)

    try:
      return jax.vmap(reset, in_axes=(self._in_axes, 0))(self._model, rng)
    finally:
      self.env.unwrapped.mjx_model = original

  def step(self, state: State, action: jax.Array) -> State:
    original = self.env.unwrapped.mjx_model

    def step(m, s, a):
      return self._env_fn(m).step(s, a)

    try:
      return jax.vmap(step, in_axes=(self._in_axes, 0, 0))(self._model, state, action)
    finally:
      self.env.unwrapped.mjx_model = original


def friction_randomizer(low: float = 0.6, high: float = 1.4) -> Callable:
  """Scale the sliding friction of every explicit contact pair by U(low, high) per environment."""

  def fn(mjx_model, keys):
    scale = jax.vmap(lambda k: jax.random.uniform(k, (), minval=low, maxval=high))(keys)
    friction = mjx_model.pair_friction[None] * jnp.ones((keys.shape[0], 1, 1))
    friction = friction.at[:, :, :2].multiply(scale[:, None, None])
    model = mjx_model.replace(pair_friction=friction)   # only this field gets a batch axis
    in_axes = jax.tree.map(lambda _: None, mjx_model).replace(pair_friction=0)
    return model, in_axes

  return fn


def wrap(env, episode_length: int = 220, batch_size: Optional[int] = None,
         randomize_fn: Optional[Callable] = None, rng: Optional[jax.Array] = None):
  """Our counterpart of brax.envs.wrappers.training.wrap: episode limit, vmap (or DR), auto-reset."""
  env = EpisodeWrapper(env, episode_length)
  if randomize_fn is not None:
    env = DomainRandomizationWrapper(env, randomize_fn, rng if rng is not None else jax.random.PRNGKey(0),
                                     batch_size or 1)
  else:
    env = VmapWrapper(env, batch_size)
  return AutoResetWrapper(env)
