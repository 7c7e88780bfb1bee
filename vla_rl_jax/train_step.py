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
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from vla_rl_jax import integrity, sharding
from vla_rl_jax.builders import Built
from vla_rl_jax.rl import advantages as adv_lib
from vla_rl_jax.rl.losses import LossInputs, make_loss
from vla_rl_jax.rollout import call_obs, rollout
from vla_rl_jax.types import EnvStats, Trajectory, TrainState

_EMA = 0.9  # per-task success moving average in EnvStats
TRAIN_STREAM = 0x7EA1  # training randomness: fold_in(fold_in(root, TRAIN_STREAM), step)


def local_order(rng: jax.Array, weight: jax.Array, num_blocks: int) -> jax.Array:
  """int32[S, N / S]: per block (S blocks, whole blocks per batch shard), a random order of ITS
  trajectories, survivors first.

  Like the reference (which fills every minibatch with trajectories of informative groups), the
  trajectories dynamic sampling keeps are shuffled and packed into the first minibatches, but
  within each batch shard, so that no trajectory moves between devices. Minibatch i takes
  positions i*m .. i*m + m - 1 of every block's order (m = minibatch_size / S); minibatches left
  with no survivor are skipped.
  """
  w = weight.reshape(num_blocks, -1)

  def one(key, w_row):
    perm = jax.random.permutation(key, w_row.shape[0])
    return perm[jnp.argsort(-w_row[perm], stable=True)]  # survivors first, still shuffled
  return jax.vmap(one)(jax.random.split(rng, num_blocks), w)


def keep_groups(informative: jax.Array, num_blocks: int, keep_per_block: int, group_size: int):
  """Oversampled dynamic sampling, per block: the first `keep_per_block` informative groups.

  informative: bool[B'] per rolled-out group (group-major, B' / S whole groups per block).
  Returns (int32[S, keep_per_block * G] block-local trajectory rows to keep, int32[S] slots each
  block had to fill with uninformative groups because it fell short).
  """
  inf = informative.reshape(num_blocks, -1)
  order = jnp.argsort(~inf, axis=1, stable=True)[:, :keep_per_block]     # informative first
  rows = order[:, :, None] * group_size + jnp.arange(group_size)
  short = jnp.maximum(keep_per_block - jnp.sum(inf, axis=1), 0)
  return rows.reshape(num_blocks, -1).astype(jnp.int32), short


def take_local(tree, rows: jax.Array, mesh: Mesh):
  """Rows rows[s] (block-local row numbers) of every block s of the leading axis -> [S * k].

  A shard_map over the batch shards (each holds whole blocks), so each shard gathers only from the
  rows it holds: observations, scenes and tokens never cross devices (a plain x[perm] over a
  sharded axis all-gathers the whole buffer).
  """
  spec = P(sharding.BATCH_AXES)
  def gather(t, r):
    nb = r.shape[0]  # blocks on this shard
    def g(x):
      xb = x.reshape((nb, -1) + x.shape[1:])
      return jax.vmap(lambda xi, ri: xi[ri])(xb, r).reshape((-1,) + x.shape[1:])
    return jax.tree_util.tree_map(g, t)
  return jax.shard_map(gather, mesh=mesh, in_specs=(spec, spec), out_specs=spec)(tree, rows)


def group_advantages(cfg, rewards: jax.Array):
  """rewards f32[B', G] -> (advantages, dynamic-sampling weights) of the configured estimator."""
  return adv_lib.compute(cfg.rl.advantage, rewards, cfg.rl.adv_eps, cfg.rl.dynamic_sampling,
                         cfg.rl.advantage_kwargs)


def update_env_stats(stats: EnvStats, traj: Trajectory, num_tasks: int) -> EnvStats:
  """Episode count and the per-task success moving average after one batch of rollouts."""
  counts = jax.ops.segment_sum(jnp.ones_like(traj.reward), traj.task_id, num_tasks)
  succ = jax.ops.segment_sum(traj.reward, traj.task_id, num_tasks)
  batch_rate = succ / jnp.maximum(counts, 1.0)
  first = stats.task_count == 0
  ema = jnp.where(first, batch_rate, _EMA * stats.task_success + (1 - _EMA) * batch_rate)
  return EnvStats(episodes=stats.episodes + traj.reward.shape[0],
                  task_success=jnp.where(counts > 0, ema, stats.task_success),
                  task_count=stats.task_count + counts)


def make_loss_fn(b: Built):
  """(params, minibatch Trajectory, advantages, weights, ref_params) -> (loss, metrics)."""
  cfg = b.cfg
  loss_impl = make_loss(cfg.rl)
  temp = cfg.policy.temperature

  def score(params, traj: Trajectory, weights):
    """log-probs and entropies f32[M, C * L], one policy call at a time.

    Calls that no surviving trajectory of the minibatch reached (the rollout exited early, the
    episodes ended, or only dropped groups got there) are skipped with lax.cond: they are neither
    re-rendered nor put through the model, forward or backward.
    """
    m, c, l = traj.tokens.shape
    live = traj.token_mask * (weights > 0)[:, None, None]
    reached = jnp.any(live > 0, axis=(0, 2))  # bool[C]: a prefix of True
    zeros = jnp.zeros((m, l), jnp.float32)
    text = b.text_table[traj.task_id]

    def per_call(_, xs):
      frames_c, proprio_c, tokens_c, run = xs
      def go():
        obs = call_obs(b.env, frames_c, proprio_c, text, cfg.env.camera)
        return b.policy.log_prob(params, obs, tokens_c, temp)
      return None, jax.lax.cond(run, go, lambda: (zeros, zeros))

    time_major = lambda x: jnp.swapaxes(x, 0, 1)
    xs = (jax.tree_util.tree_map(time_major, traj.frames), time_major(traj.proprio),
          time_major(traj.tokens), reached)
    _, (logp, ent) = jax.lax.scan(per_call, None, xs)  # [C, M, L]
    return time_major(logp).reshape(m, c * l), time_major(ent).reshape(m, c * l)

  def loss_fn(params, traj: Trajectory, advantages, weights, ref_params):
    m, _, l = traj.tokens.shape
    logp, ent = score(params, traj, weights)
    ref_logp = None
    if ref_params is not None and cfg.rl.kl_coef > 0:
      ref_logp = jax.lax.stop_gradient(score(ref_params, traj, weights)[0])
    inp = LossInputs(logp=logp, old_logp=traj.logp.reshape(m, -1), advantages=advantages,
                     token_mask=traj.token_mask.reshape(m, -1), traj_weight=weights,
                     entropy=ent, ref_logp=ref_logp, chunk_size=cfg.policy.chunk_size,
                     action_dim=l // cfg.policy.chunk_size)
    return loss_impl(inp)

  return loss_fn


def make_train_step(b: Built):
  """Returns the jitted, sharded, donating train step for the built run."""
  cfg, mesh = b.cfg, b.mesh
  g, bsz, over = cfg.rl.group_size, cfg.rl.num_prompts, cfg.rl.oversample
  n_roll = cfg.num_rollout_trajectories
  blocks = cfg.num_blocks
  mb_local, num_mb = cfg.rl.minibatch_size // blocks, cfg.num_minibatches
  loss_fn = make_loss_fn(b)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  constrain = lambda t: sharding.constrain_batch(t, mesh)

  def step_fn(state: TrainState, stats: EnvStats):
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, TRAIN_STREAM), state.step)
    rng_rollout, rng_shuffle = jax.random.split(rng)
    traj, calls = rollout(b.env, b.policy, state.params, rng_rollout, text_table=b.text_table,
                          num_prompts=bsz * over, group_size=g, num_calls=cfg.num_calls,
                          temperature=cfg.policy.temperature, camera=cfg.env.camera,
                          store=cfg.rollout.store,
                          policy_microbatch=cfg.rollout.policy_microbatch, mesh=mesh)
    rewards = traj.reward.reshape(bsz * over, g)
    adv, weight = group_advantages(cfg, rewards)
    adv, weight = constrain((adv.reshape(n_roll), weight.reshape(n_roll)))
    batch = (traj, adv, weight)
    extra = {}
    if over > 1:  # keep num_prompts informative groups, each shard from its own rollouts
      rows, short = keep_groups(weight.reshape(bsz * over, g)[:, 0] > 0, blocks, bsz // blocks, g)
      batch = take_local(batch, rows, mesh)
      extra = dict(buffer_short=jnp.any(short > 0).astype(jnp.float32),
                   buffer_short_frac=jnp.sum(short) / bsz)
    traj_u, adv_u, weight_u = batch

    def update(order, carry, i):
      rows = jax.lax.dynamic_slice_in_dim(order, i * mb_local, mb_local, axis=1)
      traj_mb, adv_mb, w_mb = take_local(batch, rows, mesh)
      # A minibatch whose groups were all dropped by dynamic sampling carries no gradient: it is
      # not computed at all (no forward, backward, decay or moment update).
      live = jnp.sum(w_mb) > 0

      def run(carry):
        params, opt_state = carry
        (loss, aux), grads = grad_fn(params, traj_mb, adv_mb, w_mb, state.ref_params)
        updates, new_opt = b.tx.update(grads, opt_state, params)
        metrics = dict(aux, loss=loss, grad_norm=optax.tree.norm(grads))
        return (optax.apply_updates(params, updates), new_opt), metrics

      shapes = jax.eval_shape(run, carry)[1]
      skip = lambda carry: (carry, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                          shapes))
      carry, metrics = jax.lax.cond(live, run, skip, carry)
      return carry, dict(metrics, live=live.astype(jnp.float32))

    def epoch(carry, rng_e):
      order = local_order(rng_e, weight_u, blocks)
      return jax.lax.scan(lambda c, i: update(order, c, i), carry, jnp.arange(num_mb))

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
        render_overflow=jnp.sum(traj.render_overflow).astype(jnp.float32),
        policy_calls=calls.astype(jnp.float32),
        valid_group_frac=jnp.mean(weight),
        kept_valid_group_frac=jnp.mean(weight_u),
        valid_tokens=jnp.sum(traj_u.token_mask * weight_u[:, None, None]),
        updates_applied=jnp.sum(live),
        adv_abs_mean=jnp.mean(jnp.abs(adv_u)),
        # the guard reads the new parameters and moments themselves: loss and grad_norm average
        # live minibatches only and read 0.0 once dynamic sampling drops every group
        nonfinite_state=integrity.nonfinite_count((params, opt_state)),
        **extra,
    )
    new_stats = update_env_stats(stats, traj, b.env.num_tasks)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, new_stats, metrics

  return jax.jit(step_fn,
                 in_shardings=(b.state_shardings, b.env_stats_shardings),
                 out_shardings=(b.state_shardings, b.env_stats_shardings, sharding.replicated(mesh)),
                 donate_argnums=(0, 1))
