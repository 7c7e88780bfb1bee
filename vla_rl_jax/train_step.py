"""make_train_step: rollout + reward + advantages + minibatch updates, fused into ONE jit.

    train_step(state: TrainState, env_stats: EnvStats) -> (TrainState, EnvStats, metrics)

Explicit in/out shardings (state by logical-axis rules, trajectories over data x fsdp), donated
inputs, randomness from fold_in(state.rng, state.step). Old log-probs are the rollout's own (no
second pass), and the same tempered log-softmax scores them in the update, so the first ratio is 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from vla_rl_jax import sharding
from vla_rl_jax.builders import Built
from vla_rl_jax.rl import advantages as adv_lib
from vla_rl_jax.rl.losses import LOSSES, LossInputs
from vla_rl_jax.rollout import rollout
from vla_rl_jax.types import EnvStats, Trajectory, TrainState

_EMA = 0.9  # per-task success moving average in EnvStats
TRAIN_STREAM = 0x7EA1  # training randomness: fold_in(fold_in(root, TRAIN_STREAM), step)


def minibatch_order(rng: jax.Array, weight: jax.Array, mb: int, num_mb: int) -> jax.Array:
  """Permutation of the N trajectories for the minibatch split, survivors packed first.

  Like the reference (which fills every minibatch with trajectories of informative groups), the
  trajectories that dynamic sampling keeps are shuffled and packed into the first minibatches;
  minibatches left with no survivor are skipped. Layout is strided: minibatch i is positions
  i, i + num_mb, i + 2 num_mb, ... so every minibatch spans all batch shards.
  """
  n = weight.shape[0]
  shuffled = jax.random.permutation(rng, n)
  packed = shuffled[jnp.argsort(-weight[shuffled], stable=True)]  # survivors first, still shuffled
  p = jnp.arange(n)
  return packed[(p % num_mb) * mb + p // num_mb]


def make_loss_fn(b: Built):
  """(params, minibatch Trajectory, advantages, weights, ref_params) -> (loss, metrics)."""
  cfg = b.cfg
  loss_impl = LOSSES[cfg.rl.loss]
  temp = cfg.policy.temperature

  def score(params, traj: Trajectory):
    """log-probs and entropies f32[M, C * L], one policy call at a time.

    Calls that no trajectory of the minibatch reached (the rollout exited early or the episodes
    ended) are skipped with lax.cond: padded steps never go through the model, forward or backward.
    """
    m, c, l = traj.tokens.shape
    reached = jnp.any(traj.token_mask > 0, axis=(0, 2))  # bool[C]: a prefix of True
    zeros = jnp.zeros((m, l), jnp.float32)

    def per_call(_, xs):
      obs_c, tokens_c, run = xs
      out = jax.lax.cond(run, lambda: b.policy.log_prob(params, obs_c, tokens_c, temp),
                         lambda: (zeros, zeros))
      return None, out

    time_major = lambda x: jnp.swapaxes(x, 0, 1)
    xs = (jax.tree_util.tree_map(time_major, traj.obs), time_major(traj.tokens), reached)
    _, (logp, ent) = jax.lax.scan(per_call, None, xs)  # [C, M, L]
    return time_major(logp).reshape(m, c * l), time_major(ent).reshape(m, c * l)

  def loss_fn(params, traj: Trajectory, advantages, weights, ref_params):
    m = traj.tokens.shape[0]
    logp, ent = score(params, traj)
    ref_logp = None
    if ref_params is not None and cfg.rl.kl_coef > 0:
      ref_logp = jax.lax.stop_gradient(score(ref_params, traj)[0])
    inp = LossInputs(logp=logp, old_logp=traj.logp.reshape(m, -1), advantages=advantages,
                     token_mask=traj.token_mask.reshape(m, -1), traj_weight=weights,
                     entropy=ent, ref_logp=ref_logp)
    return loss_impl(inp, cfg.rl)

  return loss_fn


def make_train_step(b: Built):
  """Returns the jitted, sharded, donating train step for the built run."""
  cfg, mesh = b.cfg, b.mesh
  n, g, bsz = cfg.num_trajectories, cfg.rl.group_size, cfg.rl.num_prompts
  mb, num_mb = cfg.rl.minibatch_size, cfg.num_minibatches
  loss_fn = make_loss_fn(b)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  constrain = lambda t: sharding.constrain_batch(t, mesh)

  def step_fn(state: TrainState, stats: EnvStats):
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, TRAIN_STREAM), state.step)
    rng_rollout, rng_shuffle = jax.random.split(rng)
    traj, calls = rollout(b.env, b.policy, state.params, rng_rollout, text_table=b.text_table,
                          num_prompts=bsz, group_size=g, num_calls=cfg.num_calls,
                          temperature=cfg.policy.temperature, camera=cfg.env.camera,
                          constrain=constrain)
    rewards = traj.reward.reshape(bsz, g)
    adv, weight = adv_lib.compute(cfg.rl.advantage, rewards, cfg.rl.adv_eps, cfg.rl.dynamic_sampling)
    adv, weight = adv.reshape(n), weight.reshape(n)
    def update(carry, batch):
      params, opt_state = carry
      traj_mb, adv_mb, w_mb = batch
      (loss, aux), grads = grad_fn(params, traj_mb, adv_mb, w_mb, state.ref_params)
      updates, new_opt = b.tx.update(grads, opt_state, params)
      new_params = optax.apply_updates(params, updates)
      # A minibatch whose groups were all dropped by dynamic sampling changes nothing (no decay,
      # no moment updates): it carries no information.
      live = jnp.sum(w_mb) > 0
      keep = lambda new, old: jax.tree_util.tree_map(lambda x, y: jnp.where(live, x, y), new, old)
      metrics = dict(aux, loss=loss, grad_norm=optax.tree.norm(grads), live=live.astype(jnp.float32))
      return (keep(new_params, params), keep(new_opt, opt_state)), metrics

    def epoch(carry, rng_e):
      perm = minibatch_order(rng_e, weight, mb, num_mb)
      shuffled = constrain(jax.tree_util.tree_map(lambda x: x[perm], (traj, adv, weight)))
      split = lambda x: jnp.swapaxes(x.reshape((mb, num_mb) + x.shape[1:]), 0, 1)
      batches = jax.tree_util.tree_map(split, shuffled)
      return jax.lax.scan(update, carry, batches)

    (params, opt_state), mb_metrics = jax.lax.scan(
        epoch, (state.params, state.opt_state), jax.random.split(rng_shuffle, cfg.rl.num_epochs))
    mb_metrics = jax.tree_util.tree_map(lambda x: x.reshape(-1), mb_metrics)  # [epochs * num_mb]
    live = mb_metrics.pop("live")
    mean_live = lambda x: jnp.sum(jnp.where(live > 0, x, 0.0)) / jnp.maximum(jnp.sum(live), 1.0)
    metrics = {k: mean_live(v) for k, v in mb_metrics.items()}
    metrics["first_ratio_dev"] = mb_metrics["ratio_max_dev"][0]  # exactly 0: same function
    metrics.update(
        success_rate=jnp.mean(traj.reward),
        episode_length=jnp.mean(traj.length.astype(jnp.float32)),
        unstable_frac=jnp.mean(traj.unstable.astype(jnp.float32)),
        policy_calls=calls.astype(jnp.float32),
        valid_group_frac=jnp.mean(weight),
        valid_tokens=jnp.sum(traj.token_mask),
        updates_applied=jnp.sum(live),
        adv_abs_mean=jnp.mean(jnp.abs(adv)),
    )
    counts = jax.ops.segment_sum(jnp.ones_like(traj.reward), traj.task_id, b.env.num_tasks)
    succ = jax.ops.segment_sum(traj.reward, traj.task_id, b.env.num_tasks)
    seen = counts > 0
    batch_rate = succ / jnp.maximum(counts, 1.0)
    first = stats.task_count == 0
    ema = jnp.where(first, batch_rate, _EMA * stats.task_success + (1 - _EMA) * batch_rate)
    new_stats = EnvStats(episodes=stats.episodes + n,
                         task_success=jnp.where(seen, ema, stats.task_success),
                         task_count=stats.task_count + counts)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, new_stats, metrics

  return jax.jit(step_fn,
                 in_shardings=(b.state_shardings, b.env_stats_shardings),
                 out_shardings=(b.state_shardings, b.env_stats_shardings, sharding.replicated(mesh)),
                 donate_argnums=(0, 1))
