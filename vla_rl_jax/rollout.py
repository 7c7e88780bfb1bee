"""Policy x env over the horizon, on device: B initial states, G samples each, early exit.

`rollout` is a `lax.while_loop` over policy calls (C at most) with a `lax.scan` over the K actions of
each chunk inside. Episodes that have ended are frozen (their state is kept, their later tokens are
masked) and the loop stops as soon as every episode has ended. No losses, no host I/O.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from envs.base import Env, State, image_key
from vla_rl_jax.policy import Policy
from vla_rl_jax.types import PolicyObs, Trajectory


def policy_obs(state: State, text_table: jax.Array, camera: str) -> PolicyObs:
  """Env observation (batched) -> what the policy sees; task ids become instruction tokens."""
  obs = state.obs
  image = obs[image_key(camera)]
  proprio = obs.get("proprio", jnp.zeros(image.shape[:-3] + (0,), jnp.float32))
  return PolicyObs(image=image, text=text_table[obs["task_id"]], proprio=proprio.astype(jnp.float32))


def _select(pred: jax.Array, on_true, on_false):
  """Per-environment tree select: pred is bool[N]."""
  def sel(a, b):
    return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - 1)), a, b)
  return jax.tree_util.tree_map(sel, on_true, on_false)


def rollout(env: Env, policy: Policy, params, rng: jax.Array, *, text_table: jax.Array,
            num_prompts: int, group_size: int, num_calls: int, temperature: float, camera: str,
            reset_fn: Callable[[jax.Array], State] | None = None,
            constrain: Callable = lambda x: x) -> tuple[Trajectory, jax.Array]:
  """Rolls out N = B * G episodes; trajectory n starts from initial state n // G (group-major).

  Returns (Trajectory with leading [N] / [N, C], number of policy calls actually run).
  `constrain` applies the batch sharding to per-trajectory arrays (identity off-mesh).
  """
  reset_fn = reset_fn or env.reset
  b, g, c_max = num_prompts, group_size, num_calls
  n = b * g
  k, d = policy.chunk_size, policy.action_dim
  rng_reset, rng_sample = jax.random.split(rng)
  s0 = jax.vmap(reset_fn)(jax.random.split(rng_reset, b))
  state = constrain(jax.tree_util.tree_map(lambda x: jnp.repeat(x, g, axis=0), s0))
  obs0 = policy_obs(state, text_table, camera)

  def buf(x, dtype=None):
    return constrain(jnp.zeros((n, c_max) + x.shape[1:], dtype or x.dtype))

  bufs = dict(obs=jax.tree_util.tree_map(buf, obs0),
              tokens=buf(jnp.zeros((n, k * d)), jnp.int32),
              logp=buf(jnp.zeros((n, k * d))),
              mask=buf(jnp.zeros((n, k * d))))
  done0 = state.done > 0
  carry0 = (jnp.int32(0), state, done0, jnp.zeros((n,), jnp.int32), bufs)
  step_fn = jax.vmap(env.step)

  def cond(carry):
    c, _, done, _, _ = carry
    return (c < c_max) & ~jnp.all(done)

  def body(carry):
    c, state, done, length, bufs = carry
    obs = policy_obs(state, text_table, camera)
    actions, tokens, logp = policy.sample(params, obs, jax.random.fold_in(rng_sample, c), temperature)

    def env_step(inner, action):
      state, done, length = inner
      runs = ~done
      new = step_fn(state, action)
      state = _select(done, state, new)
      return (state, done | (new.done > 0), length + runs.astype(jnp.int32)), runs

    (state, done, length), runs = jax.lax.scan(env_step, (state, done, length),
                                               jnp.swapaxes(actions, 0, 1))
    mask = jnp.repeat(runs.T.astype(jnp.float32), d, axis=1)  # [N, K*D], step-major like tokens
    put = lambda b_, x: b_.at[:, c].set(x)
    bufs = dict(obs=jax.tree_util.tree_map(put, bufs["obs"], obs), tokens=put(bufs["tokens"], tokens),
                logp=put(bufs["logp"], logp), mask=put(bufs["mask"], mask))
    return c + 1, constrain(state), done, length, bufs

  calls, state, _, length, bufs = jax.lax.while_loop(cond, body, carry0)
  success = state.info["success"] & ~state.info["unstable"]
  traj = Trajectory(obs=bufs["obs"], tokens=bufs["tokens"], logp=bufs["logp"],
                    token_mask=bufs["mask"], reward=success.astype(jnp.float32), length=length,
                    task_id=state.obs["task_id"].astype(jnp.int32), unstable=state.info["unstable"])
  return traj, calls
