"""The same GRPO step run the way the reference implementation runs it: the unfused baseline.

SimpleVLA-RL (veRL + CPU simulators) steps its environments from a Python loop: the policy is one
compiled call, the simulator another, groups of rollouts are produced one after another, every
environment renders every control step, finished episodes keep going until the horizon, the old
log-probs are recomputed in a separate pass over the stored observations, and the update is a
Python loop over minibatches. `UnfusedStep` does exactly that with this repository's own pieces
(the same env, policy, loss, advantages, optimiser, minibatch order and randomness as
`train_step.make_train_step`), so that `launch.benchmark`'s `fused_vs_unfused` compares two
implementations of ONE algorithm: for the same parameters and seed they roll out the same episodes
(tests/unfused_test.py) and differ only in how the work reaches the device.

    step = UnfusedStep(built)
    state, stats, metrics = step(state, stats)       # same signature as the fused train step

Single device or one process's devices used as one (no mesh sharding): it is a baseline.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from envs.base import policy_image
from vla_rl_jax.builders import Built
from vla_rl_jax.rollout import _proprio, _select
from vla_rl_jax.train_step import (TRAIN_STREAM, group_advantages, keep_groups, local_order,
                                   make_grad_fn, update_env_stats)
from vla_rl_jax.types import EnvStats, PolicyObs, Trajectory, TrainState

class UnfusedStep:
  """Python-loop GRPO step: jitted policy call, jitted env step, jitted update, host glue."""

  def __init__(self, b: Built):
    self.b = b
    cfg, env, policy = b.cfg, b.env, b.policy
    camera = cfg.env.camera
    self.cfg = cfg

    def act(params, state, text, keys, temperature):
      obs = PolicyObs(image=policy_image(state.obs, camera), text=text, proprio=_proprio(state))
      actions, tokens, logp = policy.sample(params, obs, keys, temperature)
      overflow = jax.vmap(lambda s: env.render_overflow(env.scene(s)))(state)
      return actions, tokens, logp, obs.image, obs.proprio, overflow

    def env_step(state, done, length, action):
      """One control step of a group; env.step renders the cameras every step, as a CPU
      simulator does. Ended episodes are stepped too and their result discarded."""
      runs = ~done
      new = jax.vmap(env.step)(state, action)
      state = _select(done, state, new)
      return state, done | (new.done > 0), length + runs.astype(jnp.int32), runs

    def old_logp(params, images, proprio, text, tokens, temperature):
      """The separate pass: log-probs of a group's sampled tokens, [G, C, L], recomputed."""
      g, c = tokens.shape[:2]
      flat = lambda x: x.reshape((g * c,) + x.shape[2:])
      obs = PolicyObs(image=flat(images), text=jnp.repeat(text, c, axis=0), proprio=flat(proprio))
      logp, _ = policy.log_prob(params, obs, flat(tokens), temperature)
      return logp.reshape(tokens.shape)

    grad_fn = make_grad_fn(b, sharded=False)  # rl.grad_accum as the fused step; unsharded

    def update(params, opt_state, traj_mb, adv_mb, w_mb, ref_params):
      (loss, aux), grads = grad_fn(params, traj_mb, adv_mb, w_mb, ref_params)
      updates, opt_state = b.tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return params, opt_state, dict(aux, loss=loss)

    self._reset = jax.jit(jax.vmap(env.reset))
    self._act = jax.jit(act, static_argnums=4)
    self._env_step = jax.jit(env_step)
    self._old_logp = jax.jit(old_logp, static_argnums=5)
    self._update = jax.jit(update)
    self._order = jax.jit(local_order, static_argnums=2)

  # -- rollout ---------------------------------------------------------------------------------

  def rollout(self, params, rng: jax.Array, num_prompts: int, temperature: float,
              recompute_logp: bool = True) -> Trajectory:
    """B = num_prompts groups of G episodes, one group after another, every episode to the horizon.

    Randomness as rollout.rollout's: the same reset keys and the same per-episode sampling keys,
    so both give the same episodes for the same parameters (bit for bit under greedy decoding).
    """
    cfg, b = self.cfg, self.b
    g, c_max, k = cfg.rl.group_size, cfg.num_calls, cfg.policy.chunk_size
    n = num_prompts * g
    rng_reset, rng_sample = jax.random.split(rng)
    reset_keys = jax.random.split(rng_reset, num_prompts)
    call_keys = [jax.random.split(jax.random.fold_in(rng_sample, c), n) for c in range(c_max)]
    groups = []
    for j in range(num_prompts):
      s0 = self._reset(reset_keys[j:j + 1])
      state = jax.tree_util.tree_map(lambda x: jnp.repeat(x, g, axis=0), s0)
      task_id = state.obs["task_id"].astype(jnp.int32)
      text = b.text_table[task_id]
      done, length = state.done > 0, jnp.zeros((g,), jnp.int32)
      rec = dict(images=[], proprio=[], tokens=[], logp=[], mask=[], overflow=[])
      for c in range(c_max):
        actions, tokens, logp, image, proprio, overflow = self._act(
            params, state, text, call_keys[c][j * g:(j + 1) * g], temperature)
        runs = []
        for i in range(k):
          state, done, length, ran = self._env_step(state, done, length, actions[:, i])
          runs.append(ran)
        mask = jnp.repeat(jnp.stack(runs, 1).astype(jnp.float32), b.env.action_size, axis=1)
        for key, v in (("images", image), ("proprio", proprio), ("tokens", tokens),
                       ("logp", logp), ("mask", mask), ("overflow", overflow)):
          rec[key].append(v)
      stack = lambda key: jnp.stack(rec[key], 1)
      images, proprio, tokens = stack("images"), stack("proprio"), stack("tokens")
      logp = (self._old_logp(params, images, proprio, text, tokens, temperature) if recompute_logp
              else stack("logp"))
      success = state.info["success"] & ~state.info["unstable"]
      groups.append(Trajectory(
          frames={"image": images}, proprio=proprio, tokens=tokens, logp=logp,
          token_mask=stack("mask"), reward=success.astype(jnp.float32), length=length,
          task_id=task_id, unstable=state.info["unstable"],
          render_overflow=jnp.sum(stack("overflow"), 1), grasped=state.info.get("grasped")))
    return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *groups)

  # -- the step --------------------------------------------------------------------------------

  def __call__(self, state: TrainState, stats: EnvStats):
    cfg = self.cfg
    g, bsz, over = cfg.rl.group_size, cfg.rl.num_prompts, cfg.rl.oversample
    n_roll, blocks = cfg.num_rollout_trajectories, cfg.num_blocks
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, TRAIN_STREAM), state.step)
    rng_rollout, rng_shuffle = jax.random.split(rng)
    traj = self.rollout(state.params, rng_rollout, bsz * over, cfg.policy.temperature)
    rewards = traj.reward.reshape(bsz * over, g)
    adv, weight = group_advantages(cfg, rewards)
    adv, weight = adv.reshape(n_roll), weight.reshape(n_roll)
    batch = (traj, adv, weight)
    if over > 1:  # keep num_prompts informative groups per block, as the fused step does
      rows, _ = keep_groups(weight.reshape(bsz * over, g)[:, 0] > 0, blocks, bsz // blocks, g)
      batch = _take(batch, rows, n_roll // blocks)
    traj_u, adv_u, weight_u = batch
    n_keep = cfg.num_trajectories
    mb_local = cfg.rl.minibatch_size // blocks
    params, opt_state = state.params, state.opt_state
    mb_metrics = []
    for rng_e in jax.random.split(rng_shuffle, cfg.rl.num_epochs):
      order = self._order(rng_e, weight_u, blocks)
      for i in range(cfg.num_minibatches):
        rows = order[:, i * mb_local:(i + 1) * mb_local]
        traj_mb, adv_mb, w_mb = _take(batch, rows, n_keep // blocks)
        if float(jnp.sum(w_mb)) <= 0:  # a minibatch of dropped groups: no update, as fused
          continue
        params, opt_state, m = self._update(params, opt_state, traj_mb, adv_mb, w_mb,
                                            state.ref_params)
        mb_metrics.append(m)
    metrics: dict[str, Any] = {}
    if mb_metrics:
      metrics = {key: float(np.mean([float(m[key]) for m in mb_metrics])) for key in mb_metrics[0]}
    metrics.update(success_rate=float(jnp.mean(traj.reward)),
                   episode_length=float(jnp.mean(traj.length.astype(jnp.float32))),
                   valid_group_frac=float(jnp.mean(weight)),
                   updates_applied=float(len(mb_metrics)),
                   policy_calls=float(cfg.num_calls))
    new_stats = update_env_stats(stats, traj, self.b.env.num_tasks)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), new_stats, metrics


def _take(tree, rows: jax.Array, block_len: int):
  """rows[s] (block-local) of every block s -> [S * k], block after block (as train_step.take_local)."""
  flat = (rows + block_len * jnp.arange(rows.shape[0])[:, None]).reshape(-1)
  return jax.tree_util.tree_map(lambda x: x[flat], tree)
