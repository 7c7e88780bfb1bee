"""make_train_step: rollout + reward + advantages + minibatch updates, fused into ONE jit.

    train_step(state: TrainState, env_stats: EnvStats) -> (TrainState, EnvStats, metrics)

Explicit in/out shardings (state by logical-axis rules, trajectories over data x fsdp), donated
inputs, randomness from fold_in(state.rng, state.step). Old log-probs are the rollout's own (no
second pass), and the same tempered log-softmax scores them in the update, so the first ratio is 1.
The update's gradient is one value_and_grad over the minibatch (rl.grad_accum="off") or the same
gradient accumulated one policy call of one micro-batch at a time ("per_call": make_grad_fn).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vla_rl_jax import integrity, sharding
from vla_rl_jax.builders import Built
from vla_rl_jax.config import GRAD_ACCUM
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


def _call_forward(b: Built):
  """(params, frames_c, proprio_c, text, tokens_c) -> (logp, entropy) f32[M, L] of ONE policy call
  (frames_c: the call's frame record [M, ...], re-rendered from stored scenes if that is what the
  rollout kept)."""
  cfg = b.cfg

  def fwd(params, frames_c, proprio_c, text, tokens_c):
    obs = call_obs(b.env, frames_c, proprio_c, text, cfg.env.camera)
    logp, ent = b.policy.log_prob(params, obs, tokens_c, cfg.policy.temperature)
    return logp.astype(jnp.float32), ent.astype(jnp.float32)
  return fwd


def _live_tokens(traj: Trajectory, weights: jax.Array) -> jax.Array:
  """f32[M, C, L]: tokens that ran, of trajectories dynamic sampling kept."""
  return traj.token_mask * (weights > 0)[:, None, None]


def _loss_inputs(cfg, traj: Trajectory, advantages, weights, logp, ent, ref_logp) -> LossInputs:
  m, _, l = traj.tokens.shape
  return LossInputs(logp=logp, old_logp=traj.logp.reshape(m, -1), advantages=advantages,
                    token_mask=traj.token_mask.reshape(m, -1), traj_weight=weights,
                    entropy=ent, ref_logp=ref_logp, chunk_size=cfg.policy.chunk_size,
                    action_dim=l // cfg.policy.chunk_size)


def make_loss_fn(b: Built, remat_calls: bool | None = None):
  """(params, minibatch Trajectory, advantages, weights, ref_params) -> (loss, metrics).

  The whole minibatch and every policy call in one differentiable function: a value_and_grad of
  it keeps every call's activations (C x M x the model's), unless `remat_calls` (default
  cfg.rl.remat_calls) wraps each call's forward in jax.checkpoint, so that only each call's
  inputs are kept and its activations are recomputed in the backward pass.
  """
  cfg = b.cfg
  loss_impl = make_loss(cfg.rl)
  remat = cfg.rl.remat_calls if remat_calls is None else remat_calls
  fwd = _call_forward(b)
  if remat:
    fwd = jax.checkpoint(fwd, prevent_cse=False)  # inside a scan, CSE cannot undo the remat

  def score(params, traj: Trajectory, weights):
    """log-probs and entropies f32[M, C * L], one policy call at a time.

    Calls that no surviving trajectory of the minibatch reached (the rollout exited early, the
    episodes ended, or only dropped groups got there) are skipped with lax.cond: they are neither
    re-rendered nor put through the model, forward or backward.
    """
    m, c, l = traj.tokens.shape
    reached = jnp.any(_live_tokens(traj, weights) > 0, axis=(0, 2))  # bool[C]: a prefix of True
    zeros = jnp.zeros((m, l), jnp.float32)
    text = b.text_table[traj.task_id]

    def per_call(_, xs):
      frames_c, proprio_c, tokens_c, run = xs
      go = lambda: fwd(params, frames_c, proprio_c, text, tokens_c)
      return None, jax.lax.cond(run, go, lambda: (zeros, zeros))

    time_major = lambda x: jnp.swapaxes(x, 0, 1)
    xs = (jax.tree_util.tree_map(time_major, traj.frames), time_major(traj.proprio),
          time_major(traj.tokens), reached)
    _, (logp, ent) = jax.lax.scan(per_call, None, xs)  # [C, M, L]
    return time_major(logp).reshape(m, c * l), time_major(ent).reshape(m, c * l)

  def loss_fn(params, traj: Trajectory, advantages, weights, ref_params):
    logp, ent = score(params, traj, weights)
    ref_logp = None
    if ref_params is not None and cfg.rl.kl_coef > 0:
      ref_logp = jax.lax.stop_gradient(score(ref_params, traj, weights)[0])
    return loss_impl(_loss_inputs(cfg, traj, advantages, weights, logp, ent, ref_logp))

  return loss_fn


def make_grad_fn(b: Built, sharded: bool = True):
  """The update's gradient, as cfg.rl.grad_accum says:

      grad_fn(params, traj [M], advantages f32[M], weights f32[M], ref_params)
          -> ((loss, metrics), grads)         # the signature of value_and_grad(loss_fn, has_aux)

  "off": jax.value_and_grad of make_loss_fn over the whole minibatch and every call.

  "per_call": the same value and gradient for ANY registered loss, with the activations of one
  policy call of one micro-batch alive at a time. A loss is a function of the per-token log-prob
  and entropy arrays only (rl.losses: LossInputs), so by the chain rule
      dL/dparams = sum over micro-batches u and calls c of
                   vjp(params -> (logp, entropy)[u, c])(dL/dlogp[u, c], dL/dentropy[u, c]):
    1. without gradient, score the minibatch (logp, entropy f32[M, C * L], and the reference
       log-probs when rl.kl_coef > 0) one call of one micro-batch at a time;
    2. (loss, metrics) and the cotangents dL/dlogp, dL/dentropy by value_and_grad of the loss on
       those arrays (cheap: no model in it; the token-mean, sequence-mean and GSPO's sequence ratio
       all couple tokens only here);
    3. for every (u, c), the model's vjp applied to its slice of the cotangents, accumulated in
       fp32 in a lax.scan.
  Calls that no surviving trajectory of a micro-batch reached are skipped with lax.cond in both
  passes (their cotangents are exactly 0: the loss masks them). Cost: forward (pass 1) + forward
  and backward (pass 3), i.e. what rematerialising every call costs; pass 1 also yields the loss,
  the ratio and every metric. Micro-batch u takes rows u*m .. u*m + m - 1 of every shuffle block
  (m = rl.micro_batch_size, 0: the whole block), so each batch shard only touches its own rows.

  sharded: the minibatch is sharded over the built run's mesh (its batch axes) and the gradient
  accumulator is constrained to the parameters' shardings; False: no sharding constraints (the
  unfused baseline, one device).
  """
  cfg = b.cfg
  if cfg.rl.grad_accum not in GRAD_ACCUM:
    raise ValueError(f"rl.grad_accum={cfg.rl.grad_accum!r}: choose one of {list(GRAD_ACCUM)}")
  if cfg.rl.grad_accum == "off":
    return jax.value_and_grad(make_loss_fn(b), has_aux=True)
  mesh = b.mesh if sharded else None
  loss_impl = make_loss(cfg.rl)
  fwd = _call_forward(b)
  blocks = cfg.num_blocks
  f32 = jnp.float32

  def grad_fn(params, traj: Trajectory, advantages, weights, ref_params):
    m, c, l = traj.tokens.shape
    per_block = m // blocks
    mb = cfg.rl.micro_batch_size or per_block
    if m % blocks or per_block % mb:
      raise ValueError(f"rl.micro_batch_size={mb} must divide the {per_block} trajectories of "
                       f"each of {blocks} blocks of the minibatch ({m})")
    nmb = per_block // mb
    mb_sharding = None if mesh is None else NamedSharding(mesh, P(None, sharding.BATCH_AXES))

    def split(x):  # [M, ...] -> [U, S * mb, ...]: micro-batch u = rows u*mb.. of every block
      y = x.reshape((blocks, nmb, mb) + x.shape[1:]).swapaxes(0, 1)
      y = y.reshape((nmb, blocks * mb) + x.shape[1:])
      return y if mb_sharding is None else jax.lax.with_sharding_constraint(y, mb_sharding)

    def unsplit(y):  # inverse of split
      y = y.reshape((nmb, blocks, mb) + y.shape[2:]).swapaxes(0, 1)
      return y.reshape((m,) + y.shape[3:])

    calls_first = lambda x: jnp.swapaxes(split(x), 1, 2)            # [M, C, ...] -> [U, C, S*mb, ...]
    to_calls = lambda x: calls_first(x.reshape(m, c, l))             # f32[M, C*L] -> [U, C, S*mb, L]
    from_calls = lambda y: unsplit(jnp.swapaxes(y, 1, 2)).reshape(m, c * l)  # its inverse
    reached = jnp.any(split(_live_tokens(traj, weights)) > 0, axis=(1, 3))  # bool[U, C]
    xs = (jax.tree_util.tree_map(calls_first, traj.frames), calls_first(traj.proprio),
          calls_first(traj.tokens), split(b.text_table[traj.task_id]), reached)
    zeros = jnp.zeros((blocks * mb, l), f32)

    def score(p):
      """Pass 1, no gradient: (logp, entropy) f32[M, C * L]."""
      p = jax.lax.stop_gradient(p)
      def per_micro(_, xs_u):
        frames_u, proprio_u, tokens_u, text_u, reached_u = xs_u
        def per_call(_, xs_c):
          frames_c, proprio_c, tokens_c, run = xs_c
          go = lambda: fwd(p, frames_c, proprio_c, text_u, tokens_c)
          return None, jax.lax.cond(run, go, lambda: (zeros, zeros))
        return None, jax.lax.scan(per_call, None, (frames_u, proprio_u, tokens_u, reached_u))[1]
      _, (logp, ent) = jax.lax.scan(per_micro, None, xs)  # [U, C, S*mb, L]
      return from_calls(logp), from_calls(ent)

    logp, ent = score(params)
    ref_logp = None
    if ref_params is not None and cfg.rl.kl_coef > 0:
      ref_logp = score(ref_params)[0]

    def loss_of(logp, ent):
      return loss_impl(_loss_inputs(cfg, traj, advantages, weights, logp, ent, ref_logp))
    (loss, metrics), (g_logp, g_ent) = jax.value_and_grad(loss_of, argnums=(0, 1),
                                                          has_aux=True)(logp, ent)

    grads0 = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, f32), params)
    if mesh is not None:  # the accumulator lives sharded as the parameters do
      grads0 = jax.lax.with_sharding_constraint(grads0, b.state_shardings.params)

    def per_micro(acc, xs_u):
      (frames_u, proprio_u, tokens_u, text_u, reached_u), g_logp_u, g_ent_u = xs_u
      def per_call(acc, xs_c):
        frames_c, proprio_c, tokens_c, run, g_logp_c, g_ent_c = xs_c
        def go(acc):
          _, vjp = jax.vjp(lambda p: fwd(p, frames_c, proprio_c, text_u, tokens_c), params)
          (g,) = vjp((g_logp_c, g_ent_c))
          return jax.tree_util.tree_map(lambda a, gi: a + gi.astype(f32), acc, g)
        return jax.lax.cond(run, go, lambda acc: acc, acc), None
      acc, _ = jax.lax.scan(per_call, acc, (frames_u, proprio_u, tokens_u, reached_u, g_logp_u,
                                            g_ent_u))
      return acc, None

    grads, _ = jax.lax.scan(per_micro, grads0, (xs, to_calls(g_logp), to_calls(g_ent)))
    grads = jax.tree_util.tree_map(lambda gi, p: gi.astype(p.dtype), grads, params)
    return (loss, metrics), grads

  return grad_fn


def make_train_step(b: Built):
  """Returns the jitted, sharded, donating train step for the built run."""
  cfg, mesh = b.cfg, b.mesh
  g, bsz, over = cfg.rl.group_size, cfg.rl.num_prompts, cfg.rl.oversample
  n_roll = cfg.num_rollout_trajectories
  blocks = cfg.num_blocks
  mb_local, num_mb = cfg.rl.minibatch_size // blocks, cfg.num_minibatches
  grad_fn = make_grad_fn(b)
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
