"""Policy x env over the horizon, on device: B initial states, G samples each, early exit.

`rollout` is a `lax.while_loop` over policy calls (C at most) with a `lax.scan` over the K actions of
each chunk inside. The env renders once per policy call: the K control steps of a chunk are
physics-only (`env.physics_step`) and the frame the next call reads is rendered from the state the
chunk ended in. Episodes that have ended are frozen (their state is kept, their later tokens are
masked) and the loop stops as soon as every episode has ended. No losses, no host I/O.

What the policy saw is stored per call in the cheaper of two forms (`store`): the image itself, or
the env's renderer inputs (`env.scene`: geom and camera poses, a few KB) that `call_obs` re-renders
in the update. The rollout builds the policy's observation through `call_obs` too, so the update
scores exactly the pixels the tokens were sampled from.

Data movement: resets, rendering and policy calls run where their trajectories live (the batch axis
is split over the mesh's batch shards); policy inference goes over the local envs in micro-batches
of `policy_microbatch` per shard.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from envs.base import Env, State, policy_image
from vla_rl_jax import sharding
from vla_rl_jax.policy import Policy
from vla_rl_jax.types import PolicyObs, Trajectory

STORE_MODES = ("auto", "images", "scene")


def _tree_bytes(tree: Any) -> int:
  return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def scene_bytes(env: Env) -> int:
  """Bytes of one environment's renderer inputs (`env.scene`)."""
  state = jax.eval_shape(env.reset, jax.ShapeDtypeStruct((2,), jnp.uint32))
  return _tree_bytes(jax.eval_shape(env.scene, state))


def resolve_store(env: Env, store: str) -> str:
  """"auto" -> "scene" when the renderer inputs are smaller than one image, else "images"."""
  if store not in STORE_MODES:
    raise ValueError(f"store={store!r}: choose one of {list(STORE_MODES)}")
  if store != "auto":
    return store
  h, w = env.image_size   # the env renders exactly the policy's views (builders.build_env)
  return "scene" if scene_bytes(env) < h * w * 3 * len(env.cameras) else "images"


def stored_bytes_per_call(env: Env, policy: Policy, store: str) -> int:
  """Bytes the rollout buffer holds per trajectory and policy call (frame record, proprio, and the
  tokens, log-probs and mask of the chunk)."""
  h, w = env.image_size
  frame = h * w * 3 * len(env.cameras) if resolve_store(env, store) == "images" else scene_bytes(env)
  return frame + 4 * env.proprio_size + 3 * 4 * policy.num_tokens


def frame_record(env: Env, state: State, camera: str, store: str) -> dict:
  """What is stored of one environment's frame: {"image": u8[H, V*W, 3]} (the policy's views side
  by side) or {"scene": env.scene}."""
  if store == "scene":
    return {"scene": env.scene(state)}
  return {"image": policy_image(env.render_scene(env.scene(state)), camera)}


def call_obs(env: Env, record: dict, proprio: jax.Array, text: jax.Array, camera: str) -> PolicyObs:
  """Batched frame records [M] -> the policy's observation (re-rendering stored scenes)."""
  if "image" in record:
    image = record["image"]
  else:
    image = policy_image(jax.vmap(env.render_scene)(record["scene"]), camera)
  return PolicyObs(image=image, text=text, proprio=proprio)


def _proprio(state: State) -> jax.Array:
  p = state.obs.get("proprio")
  if p is None:
    return jnp.zeros(state.done.shape + (0,), jnp.float32)
  return p.astype(jnp.float32)


def _select(pred: jax.Array, on_true, on_false):
  """Per-environment tree select: pred is bool[N]."""
  def sel(a, b):
    return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - 1)), a, b)
  return jax.tree_util.tree_map(sel, on_true, on_false)


def microbatched(fn: Callable, args: Any, per_shard: int, num_shards: int,
                 mesh: Mesh | None = None) -> Any:
  """fn over the leading axis of `args` in micro-batches of `per_shard` rows per batch shard.

  Row n lives on shard n // (N / S); micro-batch j takes rows j*m .. j*m + m - 1 of EVERY shard, so
  each shard only ever touches its own rows (no data crosses devices). per_shard <= 0 or >= N / S
  runs fn once on everything.
  """
  n = jax.tree_util.tree_leaves(args)[0].shape[0]
  s = num_shards
  n_loc = n // s
  if per_shard <= 0 or per_shard >= n_loc:
    return fn(*args)
  m = per_shard
  if n % s or n_loc % m:
    raise ValueError(f"policy_microbatch={m} must divide the {n_loc} rows of each of {s} shards")
  nmb = n_loc // m
  mb_sharding = None if mesh is None else NamedSharding(mesh, P(None, sharding.BATCH_AXES))

  def split(x):
    y = x.reshape((s, nmb, m) + x.shape[1:]).swapaxes(0, 1).reshape((nmb, s * m) + x.shape[1:])
    return y if mb_sharding is None else jax.lax.with_sharding_constraint(y, mb_sharding)

  def merge(y):
    return y.reshape((nmb, s, m) + y.shape[2:]).swapaxes(0, 1).reshape((n,) + y.shape[2:])

  out = jax.lax.map(lambda a: fn(*a), jax.tree_util.tree_map(split, args))
  return jax.tree_util.tree_map(merge, out)


def rollout(env: Env, policy: Policy, params, rng: jax.Array, *, text_table: jax.Array,
            num_prompts: int, group_size: int, num_calls: int, temperature: float, camera: str,
            reset_fn: Callable[[jax.Array], State] | None = None, store: str = "auto",
            policy_microbatch: int = 0, mesh: Mesh | None = None,
            reset_args: jax.Array | None = None) -> tuple[Trajectory, jax.Array]:
  """Rolls out N = B * G episodes; trajectory n starts from initial state n // G (group-major).

  `reset_args`: [B, ...] per-initial-state inputs of `reset_fn` instead of random keys (an exact
  evaluation set: e.g. state indices for `env.reset_to`).

  Returns (Trajectory with leading [N] / [N, C], number of policy calls actually run).
  `mesh`: the trajectory axis is split over its batch shards (None: unsharded).
  """
  reset_fn = reset_fn or env.reset
  store = resolve_store(env, store)
  b, g, c_max = num_prompts, group_size, num_calls
  n = b * g
  k, d = policy.chunk_size, policy.action_dim
  num_shards = 1 if mesh is None else math.prod(mesh.shape[a] for a in sharding.BATCH_AXES)
  constrain = (lambda t: t) if mesh is None else (lambda t: sharding.constrain_batch(t, mesh))
  rng_reset, rng_sample = jax.random.split(rng)
  keys = jax.random.split(rng_reset, b) if reset_args is None else reset_args
  if b % num_shards == 0:
    # each shard resets (and renders) its own B / S initial states, then copies them G times
    s0 = constrain(jax.vmap(reset_fn)(constrain(keys)))
    state = constrain(jax.tree_util.tree_map(lambda x: jnp.repeat(x, g, axis=0), s0))
  else:  # fewer initial states than shards: each shard resets its own trajectories' states
    state = constrain(jax.vmap(reset_fn)(constrain(jnp.repeat(keys, g, axis=0))))
  task_id = state.obs["task_id"].astype(jnp.int32)
  text = constrain(text_table[task_id])
  record = jax.vmap(lambda s: frame_record(env, s, camera, store))

  def act(rec, proprio, text, keys):
    obs = call_obs(env, rec, proprio, text, camera)
    return policy.sample(params, obs, keys, temperature)

  def buf(x, dtype=None):
    return constrain(jnp.zeros((n, c_max) + x.shape[1:], dtype or x.dtype))

  rec0 = jax.eval_shape(record, state)
  bufs = dict(frames=jax.tree_util.tree_map(buf, rec0),
              proprio=buf(_proprio(state)),
              tokens=buf(jnp.zeros((n, k * d)), jnp.int32),
              logp=buf(jnp.zeros((n, k * d))),
              mask=buf(jnp.zeros((n, k * d))))
  done0 = state.done > 0
  zeros_n = jnp.zeros((n,), jnp.int32)
  carry0 = (jnp.int32(0), state, done0, zeros_n, zeros_n, bufs)
  step_fn = jax.vmap(env.physics_step)

  def cond(carry):
    c, _, done, _, _, _ = carry
    return (c < c_max) & ~jnp.all(done)

  def body(carry):
    c, state, done, length, overflow, bufs = carry
    rec = constrain(record(state))
    overflow = overflow + jax.vmap(lambda s: env.render_overflow(env.scene(s)))(state)
    proprio = _proprio(state)
    keys = constrain(jax.random.split(jax.random.fold_in(rng_sample, c), n))
    actions, tokens, logp = microbatched(act, (rec, proprio, text, keys), policy_microbatch,
                                         num_shards, mesh)

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
    bufs = dict(frames=jax.tree_util.tree_map(put, bufs["frames"], rec),
                proprio=put(bufs["proprio"], proprio), tokens=put(bufs["tokens"], tokens),
                logp=put(bufs["logp"], logp), mask=put(bufs["mask"], mask))
    return c + 1, constrain(state), done, length, overflow, bufs

  calls, state, _, length, overflow, bufs = jax.lax.while_loop(cond, body, carry0)
  success = state.info["success"] & ~state.info["unstable"]
  traj = Trajectory(frames=bufs["frames"], proprio=bufs["proprio"], tokens=bufs["tokens"],
                    logp=bufs["logp"], token_mask=bufs["mask"],
                    reward=success.astype(jnp.float32), length=length, task_id=task_id,
                    unstable=state.info["unstable"], render_overflow=overflow,
                    grasped=state.info.get("grasped"))
  return traj, calls
