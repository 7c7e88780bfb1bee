"""Greedy evaluation rollouts on HELD-OUT initial states -> success overall and per task, videos.

The evaluation key is a fixed stream apart from training (fold_in(seed key, EVAL_STREAM)) and resets
use `env.eval_reset`, so every evaluation of a run sees the same held-out states and training never
sees them.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from envs.base import Env, State, image_key, policy_image
from vla_rl_jax import sharding
from vla_rl_jax.builders import Built
from vla_rl_jax.rollout import call_obs, rollout
from vla_rl_jax.types import PolicyObs

EVAL_STREAM = 0xE7A1


def _eval_rollout(b: Built, params, n: int, temperature: float | None, reset_fn, reset_args=None):
  """The policy once from each of n held-out starts (one per group), on the evaluation key."""
  cfg = b.cfg
  temp = cfg.policy.eval_temperature if temperature is None else temperature
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), EVAL_STREAM)
  return rollout(b.env, b.policy, params, key, text_table=b.text_table, num_prompts=n,
                 group_size=1, num_calls=cfg.num_calls, temperature=temp, camera=cfg.env.camera,
                 reset_fn=reset_fn, reset_args=reset_args, store=cfg.rollout.store,
                 policy_microbatch=cfg.rollout.policy_microbatch, mesh=b.mesh)


def make_eval_fn(b: Built, num_states: int | None = None, temperature: float | None = None,
                 with_frames: bool = False):
  """Returns jitted eval(params) -> metrics {success_rate, task_success[num_tasks], ...}.

  with_frames: also "rollout" = the first episode as the policy saw it: {"frames": u8[C, H, W, 3]
  at each policy call (the first ceil(length / K) are its own; later ones are not meaningful),
  "length", "success", "task_id"}, for a picture of the evaluation (the trainer logs it to
  TensorBoard)."""
  n = num_states or b.cfg.train.eval_num_states

  def first_episode(traj):
    one = jax.tree_util.tree_map(lambda x: x[0], traj.frames)  # [C, ...] of episode 0
    frames = call_obs(b.env, one, traj.proprio[0], jnp.zeros((traj.tokens.shape[1], 1), jnp.int32),
                      b.cfg.env.camera).image
    return {"frames": frames, "length": traj.length[0], "success": traj.reward[0],
            "task_id": traj.task_id[0]}

  def eval_fn(params):
    traj, calls = _eval_rollout(b, params, n, temperature, b.env.eval_reset)
    k = b.env.num_tasks
    counts = jax.ops.segment_sum(jnp.ones_like(traj.reward), traj.task_id, k)
    succ = jax.ops.segment_sum(traj.reward, traj.task_id, k)
    extra = {"rollout": first_episode(traj)} if with_frames else {}
    targets = getattr(b.env, "goal_targets", None)
    if traj.grasped is not None and targets is not None:
      # "pushcut": of the successes on tasks whose goal places an object, the share never grasped
      placing = jnp.asarray([bool(t) for t in targets])[traj.task_id]
      won = (traj.reward > 0) & placing
      extra["successes_pushed_frac"] = (jnp.sum(won & ~traj.grasped)
                                        / jnp.maximum(jnp.sum(won), 1)).astype(jnp.float32)
    return {**extra, "success_rate": jnp.mean(traj.reward),
            "task_success": jnp.where(counts > 0, succ / jnp.maximum(counts, 1), jnp.nan),
            "episode_length": jnp.mean(traj.length.astype(jnp.float32)),
            "render_overflow": jnp.sum(traj.render_overflow).astype(jnp.float32),
            "policy_calls": calls.astype(jnp.float32)}

  return jax.jit(eval_fn, in_shardings=(b.state_shardings.params,),
                 out_shardings=sharding.replicated(b.mesh))


# ------------------------------------------------------------------------------------------------
# Exact evaluation sets, actors (expert or policy) over whole episodes, reports with intervals.

Z95 = 1.959964


def evaluation_set(env: Env, states_per_task: int | None = None) -> np.ndarray | None:
  """i32[N, 2]: every (task, evaluation state) pair once, for envs with a finite evaluation set
  (LIBERO's 50 converted initial states per task, `env.reset_to(task, index)`); None otherwise.
  `states_per_task`: only each task's first that many states (at most the env's)."""
  n = getattr(env, "num_eval_states", None)
  if n is None or not hasattr(env, "reset_to"):
    return None
  if states_per_task is not None:
    if not 0 < states_per_task <= n:
      raise ValueError(f"states_per_task={states_per_task}: must be in [1, {n}]")
    n = states_per_task
  k = env.num_tasks
  return np.stack([np.repeat(np.arange(k), n), np.tile(np.arange(n), k)], 1).astype(np.int32)


def reset_pair(env: Env) -> Callable[[jax.Array], State]:
  """reset_fn of a (task, index) pair: `env.reset_to(pair[0], pair[1])`."""
  return lambda pair: env.reset_to(pair[0], pair[1])


def make_policy_eval_fn(b: Built, starts: np.ndarray, temperature: float | None = None,
                        reset_fn: Callable[[jax.Array], State] | None = None):
  """Returns jitted eval(params) -> {success f32[N], length i32[N], unstable, render_overflow,
  grasped (envs that report grasps)}: the
  policy (greedy by default) once from each start (`reset_fn(starts[n])`, default: (task, index)
  pairs for `env.reset_to`), sharded like the training rollouts."""
  args = jnp.asarray(starts)

  def eval_fn(params):
    traj, _ = _eval_rollout(b, params, len(starts), temperature, reset_fn or reset_pair(b.env), args)
    grasped = {} if traj.grasped is None else {"grasped": traj.grasped}
    return {"success": traj.reward, "length": traj.length, "unstable": traj.unstable,
            "render_overflow": traj.render_overflow, **grasped}

  return jax.jit(eval_fn, in_shardings=(b.state_shardings.params,),
                 out_shardings=sharding.replicated(b.mesh))


# An actor maps (state, key) -> f32[K, D]: the next K actions (a policy's chunk; an expert's one).
Actor = Callable[[State, jax.Array], jax.Array]


def expert_actor(expert: Callable[[State], jax.Array]) -> Actor:
  return lambda state, key: expert(state)[None]


def policy_actor(b: Built, params, temperature: float) -> Actor:
  """The policy on the env's own rendered observation (one call per chunk)."""
  cam = b.cfg.env.camera

  def act(state, key):
    s = b.env.observe(state)
    proprio = s.obs.get("proprio", jnp.zeros((0,), jnp.float32)).astype(jnp.float32)
    obs = PolicyObs(image=policy_image(s.obs, cam)[None], text=b.text_table[s.obs["task_id"]][None],
                    proprio=proprio[None])
    return b.policy.sample(params, obs, key, temperature)[0][0]
  return act


def run_episodes(env: Env, actor: Actor, starts: np.ndarray, horizon: int, *, seed: int = 0,
                 reset_fn: Callable[[jax.Array], State] | None = None, calls_per_jit: int = 20,
                 video_env: Env | None = None, batch_size: int | None = None) -> dict[str, Any]:
  """Episodes from `starts` under `actor`, at most `horizon` control steps each; `calls_per_jit`
  actor calls per jitted call, stopping early once every episode (of a batch) has ended.

  starts: [N, ...] inputs of `reset_fn` (default: (task, index) pairs for `env.reset_to`).
  batch_size: run the episodes this many at a time (the last batch padded), one compilation for all.
  Returns host arrays: success bool[N], length i32[N] (control steps run), unstable bool[N],
  actions f32[N, T', D] (zero after an episode's end), proprio f32[N, T'+1, P] (index t: before
  action t), and with `video_env` (the same scene, its own cameras and size) frames
  {camera: u8[N, T'+1, H, W, 3]} (frame t: before action t; after the end, the last state again).
  T' <= horizon: a batch stops after the jitted call in which its last episode ended.
  Envs that report grasps (LIBERO-MJX: info["grasped"], the goal's objects each held between both
  fingers at some step) add grasped bool[N]; with success, report() tells grasped from pushed.
  """
  reset_fn = reset_fn or reset_pair(env)
  starts = np.asarray(starts)
  n_all = starts.shape[0]
  bs = min(batch_size or n_all, n_all)
  s_shape = jax.eval_shape(reset_fn, jnp.asarray(starts[0]))
  k = jax.eval_shape(actor, s_shape, jax.ShapeDtypeStruct((2,), jnp.uint32)).shape[0]
  calls = -(-horizon // k)

  def record(state):
    out = {"proprio": state.obs.get("proprio", jnp.zeros((0,), jnp.float32)).astype(jnp.float32)}
    if video_env is not None:
      imgs = video_env.render_scene(video_env.scene(state))
      out["frames"] = {c: imgs[image_key(c)] for c in video_env.cameras}
    return out

  def one_call(carry, call):
    state, length, key = carry
    acts = actor(state, jax.random.fold_in(key, call))

    def step(inner, a):
      s, length = inner
      live = (s.done == 0) & (length < horizon)
      new = env.physics_step(s, a)
      s = jax.tree_util.tree_map(lambda x, y: jnp.where(live, y, x), s, new)
      return (s, length + live.astype(jnp.int32)), {"actions": a * live, **record(s)}

    (state, length), out = jax.lax.scan(step, (state, length), acts)
    return (state, length, key), out

  @jax.jit
  def start(starts):
    s = jax.vmap(reset_fn)(starts)
    return s, jax.vmap(record)(s)

  @functools.partial(jax.jit, static_argnums=3)
  def chunk(state, length, episode, n_calls, c0):
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(episode)

    def one(s, l, key):
      (s, l, _), out = jax.lax.scan(one_call, (s, l, key), c0 + jnp.arange(n_calls))
      return s, l, jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), out)
    return jax.vmap(one)(state, length, keys)

  m = min(calls_per_jit, calls)    # one compiled shape; steps past the horizon are masked
  results = []
  for b0 in range(0, n_all, bs):
    idx = np.minimum(np.arange(b0, b0 + bs), n_all - 1)     # the last batch repeats its last start
    state, rec0 = start(jnp.asarray(starts[idx]))
    length = jnp.zeros((bs,), jnp.int32)
    episode = jnp.asarray(idx)
    outs, c = [], 0
    while c < calls:
      state, length, out = chunk(state, length, episode, m, jnp.int32(c))
      outs.append(jax.device_get(out))
      c += m
      if bool(np.all((np.asarray(state.done) > 0) | (np.asarray(length) >= horizon))):
        break
    keep = slice(0, min(bs, n_all - b0))
    cat = lambda *xs: np.concatenate(xs, axis=1)[keep]  # noqa: E731
    rec = jax.tree_util.tree_map(lambda x0, *xs: cat(np.asarray(x0)[:, None], *xs)[:, :horizon + 1],
                                 jax.device_get(rec0), *[{k_: v for k_, v in o.items() if k_ != "actions"}
                                                         for o in outs])
    results.append({"success": np.asarray(state.info["success"] & ~state.info["unstable"])[keep],
                    "length": np.asarray(length)[keep],
                    "unstable": np.asarray(state.info["unstable"])[keep],
                    **({"grasped": np.asarray(state.info["grasped"])[keep]}
                       if "grasped" in state.info else {}),
                    "actions": cat(*[o["actions"] for o in outs])[:, :horizon], **rec})
  # batches that stopped sooner are padded in time: records repeat their last entry (as after an
  # episode's end), actions with zeros
  def join(*xs, mode="edge"):
    if xs[0].ndim == 1:
      return np.concatenate(xs)
    t = max(x.shape[1] for x in xs)
    return np.concatenate([np.pad(x, [(0, 0), (0, t - x.shape[1])] + [(0, 0)] * (x.ndim - 2),
                                  mode=mode) for x in xs])
  actions = [r.pop("actions") for r in results]
  out = jax.tree_util.tree_map(join, *results)
  out["actions"] = join(*actions, mode="constant")
  return out


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
  """Wilson score interval of a binomial proportion (95% by default); (0, 1) for n = 0."""
  if n == 0:
    return 0.0, 1.0
  p = successes / n
  den = 1 + z * z / n
  mid = (p + z * z / (2 * n)) / den
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
  return max(0.0, mid - half), min(1.0, mid + half)


def _pushcut(success: np.ndarray, grasped: np.ndarray) -> dict[str, Any]:
  """Successes reached with every goal object grasped at some step vs pushed (never grasped)."""
  s, g = int(success.sum()), int((success & grasped).sum())
  return {"successes_grasped": g, "successes_pushed": s - g,
          "pushed_fraction": (s - g) / s if s else None}


def report(env: Env, pairs: np.ndarray, success: np.ndarray, length: np.ndarray | None = None,
           suite: str | None = None, grasped: np.ndarray | None = None) -> dict[str, Any]:
  """Success per task and per suite with 95% Wilson intervals, the failed evaluation states; with
  `grasped` (run_episodes' grasped, bool[N]) also, for tasks whose goal places an object
  (env.goal_targets), how many successes came with the object grasped and how many pushed
  ("pushcut"; pushed_fraction = pushed / successes), per task and over those tasks per suite."""
  pairs = np.asarray(pairs)
  success = np.asarray(success, bool)
  targets = getattr(env, "goal_targets", None)
  if grasped is not None and targets is not None:
    grasped = np.asarray(grasped, bool)
    placing = np.array([bool(t) for t in targets])   # tasks whose goal places an object
  else:
    grasped = None
  specs = getattr(env, "specs", None)
  tasks = []
  for k, text in enumerate(env.instructions):
    m = pairs[:, 0] == k
    n, s = int(m.sum()), int(success[m].sum())
    if not n:
      continue
    row = {"task_id": k, "instruction": text, "episodes": n, "successes": s,
           "success": s / n, "ci95": list(wilson(s, n)),
           "failed_states": pairs[m & ~success, 1].tolist()}
    if specs is not None:
      row["suite"] = specs[k].suite
      row["suite_task_id"] = specs[k].task_id   # the task's id in its suite (task_ids subsets renumber)
    if length is not None:
      ln = np.asarray(length)[m & success]
      row["median_length_success"] = float(np.median(ln)) if len(ln) else None
    if grasped is not None and placing[k]:
      row.update(_pushcut(success[m], grasped[m]))
    tasks.append(row)
  groups: dict[str, list[int]] = {}
  for row in tasks:
    groups.setdefault(row.get("suite", suite or "all"), []).append(row["task_id"])
  suites = {}
  for name, ids in groups.items():
    m = np.isin(pairs[:, 0], ids)
    n, s = int(m.sum()), int(success[m].sum())
    suites[name] = {"episodes": n, "successes": s, "success": s / n, "ci95": list(wilson(s, n)),
                    "tasks": len(ids), "worst_task": min((r["success"] for r in tasks
                                                          if r["task_id"] in ids))}
    if grasped is not None:
      mp = m & placing[pairs[:, 0]]
      suites[name].update(_pushcut(success[mp], grasped[mp]))
  return {"suites": suites, "tasks": tasks}
