"""Greedy evaluation rollouts on HELD-OUT initial states -> success overall and per task.

The evaluation key is a fixed stream apart from training (fold_in(seed key, EVAL_STREAM)) and resets
use `env.eval_reset`, so every evaluation of a run sees the same held-out states and training never
sees them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vla_rl_jax import sharding
from vla_rl_jax.builders import Built
from vla_rl_jax.rollout import rollout

EVAL_STREAM = 0xE7A1


def make_eval_fn(b: Built, num_states: int | None = None, temperature: float | None = None):
  """Returns jitted eval(params) -> metrics {success_rate, task_success[num_tasks], ...}."""
  cfg, mesh = b.cfg, b.mesh
  n = num_states or cfg.train.eval_num_states
  temp = cfg.policy.eval_temperature if temperature is None else temperature
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), EVAL_STREAM)

  def eval_fn(params):
    traj, calls = rollout(b.env, b.policy, params, key, text_table=b.text_table, num_prompts=n,
                          group_size=1, num_calls=cfg.num_calls, temperature=temp,
                          camera=cfg.env.camera, reset_fn=b.env.eval_reset,
                          store=cfg.rollout.store, policy_microbatch=cfg.rollout.policy_microbatch,
                          mesh=mesh)
    k = b.env.num_tasks
    counts = jax.ops.segment_sum(jnp.ones_like(traj.reward), traj.task_id, k)
    succ = jax.ops.segment_sum(traj.reward, traj.task_id, k)
    return {"success_rate": jnp.mean(traj.reward),
            "task_success": jnp.where(counts > 0, succ / jnp.maximum(counts, 1), jnp.nan),
            "episode_length": jnp.mean(traj.length.astype(jnp.float32)),
            "render_overflow": jnp.sum(traj.render_overflow).astype(jnp.float32),
            "policy_calls": calls.astype(jnp.float32)}

  return jax.jit(eval_fn, in_shardings=(b.state_shardings.params,),
                 out_shardings=sharding.replicated(mesh))
