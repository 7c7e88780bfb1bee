"""Config -> the objects the pure functions close over: env, model + policy, optimiser, initial state.

Shared by the trainer, the evaluator, the benchmarks and the tests so they all build the same thing.
The state is never built full size on the host: eval_shape -> shardings -> jitted init.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from envs import registry
from envs.base import Env, views
from vla_rl_jax import sharding
from vla_rl_jax.config import Config
from vla_rl_jax.models import tokenizer
from vla_rl_jax.models.oft import OFTVLA
from vla_rl_jax.models.vla import TinyVLA
from vla_rl_jax.policy import Policy
from vla_rl_jax.types import EnvStats, PolicyObs, TrainState


def build_env(cfg: Config) -> Env:
  return registry.make(cfg.env.name, image_size=cfg.env.image_size, cameras=views(cfg.env.camera),
                       **dict(cfg.env.kwargs))


def text_table(cfg: Config, env: Env) -> jax.Array:
  """int32[num_tasks, S]: each task's instruction tokens (the rollout indexes it by task id)."""
  return jnp.asarray(tokenizer.for_model(cfg.model).encode_all(env.instructions,
                                                                 cfg.model.max_text_len))


def build_model(cfg: Config, env: Env, mesh: Mesh | None = None) -> TinyVLA | OFTVLA:
  """The model cfg.model.name names. mesh: where the model puts its activation sharding
  constraints (oft; None = leave the layout to the compiler, as on one device)."""
  n = cfg.policy.chunk_size * env.action_size
  if cfg.model.name == "oft":
    return OFTVLA(cfg.model, num_action_tokens=n, mesh=mesh)
  return TinyVLA(cfg.model, num_action_tokens=n)


def build_policy(cfg: Config, env: Env, mesh: Mesh | None = None) -> tuple[TinyVLA | OFTVLA, Policy]:
  model = build_model(cfg, env, mesh)

  def apply_fn(params, obs):
    # the rules context too, so any flax layer's with_logical_constraint resolves the same names
    # (the oft model's own constraints take sharding.LOGICAL_RULES and the mesh explicitly)
    with nn.logical_axis_rules(sharding.LOGICAL_RULES):
      return model.apply({"params": params}, obs)
  return model, Policy(apply_fn=apply_fn, chunk_size=cfg.policy.chunk_size, action_dim=env.action_size)


def dummy_obs(cfg: Config, env: Env, batch: int = 1) -> PolicyObs:
  h, w = env.image_size   # the policy's views side by side (envs.base.policy_image)
  return PolicyObs(image=jnp.zeros((batch, h, w * len(views(cfg.env.camera)), 3), jnp.uint8),
                   text=jnp.zeros((batch, cfg.model.max_text_len), jnp.int32),
                   proprio=jnp.zeros((batch, env.proprio_size), jnp.float32))


def build_optimizer(cfg: Config) -> optax.GradientTransformation:
  o = cfg.optim
  lr = o.learning_rate
  if o.warmup_steps:
    # counts optimiser updates: num_minibatches * num_epochs per RL step
    lr = optax.linear_schedule(0.0, o.learning_rate, o.warmup_steps)
  parts = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip > 0 else []
  parts.append(optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))
  return optax.chain(*parts)


@dataclasses.dataclass(frozen=True)
class Built:
  """Everything a run closes over, plus the shardings of its state."""
  cfg: Config
  env: Env
  model: TinyVLA | OFTVLA
  policy: Policy
  tx: optax.GradientTransformation
  mesh: Mesh
  text_table: jax.Array
  state_shardings: Any
  env_stats_shardings: Any
  abstract_state: Any
  init_fn: Any  # jitted: () -> (TrainState, EnvStats), sharded
  # jitted: params (sharded as state_shardings.params, donated) -> (TrainState, EnvStats) with a
  # fresh optimiser state: a checkpoint import builds its state without random parameters first
  state_from_params: Any = None
  # parameter dimensions left replicated because their mesh axis does not divide them (all under
  # mesh.max_replicated_mb, else build() raised); the caller lists them at start-up
  replicated_params: tuple[sharding.Fallback, ...] = ()


def build(cfg: Config, devices=None) -> Built:
  env = build_env(cfg)
  mesh = sharding.make_mesh(cfg.mesh, devices)
  model, policy = build_policy(cfg, env, mesh)
  tx = build_optimizer(cfg)
  obs = dummy_obs(cfg, env)
  root = jax.random.PRNGKey(cfg.seed)

  def init_boxed():
    return model.init(jax.random.fold_in(root, 0x1417), obs)["params"]

  boxed = jax.eval_shape(init_boxed)
  p_sh = sharding.param_shardings(boxed, mesh)
  fallbacks = sharding.replication_fallbacks(boxed, mesh)
  sharding.check_replication(fallbacks, cfg.mesh)  # before anything is compiled
  repl = sharding.replicated(mesh)

  def init_state(params=None) -> tuple[TrainState, EnvStats]:
    params = nn.meta.unbox(init_boxed()) if params is None else params
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       rng=root, ref_params=params if cfg.rl.kl_coef > 0 else None)
    stats = EnvStats(episodes=jnp.zeros((), jnp.int32),
                     task_success=jnp.zeros((env.num_tasks,), jnp.float32),
                     task_count=jnp.zeros((env.num_tasks,), jnp.float32))
    return state, stats

  abstract_state, abstract_stats = jax.eval_shape(init_state)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract_state.opt_state, p_sh,
                                 transform_non_params=lambda _: repl)
  state_sh = TrainState(step=repl, params=p_sh, opt_state=opt_sh, rng=repl,
                        ref_params=p_sh if cfg.rl.kl_coef > 0 else None)
  stats_sh = jax.tree_util.tree_map(lambda _: repl, abstract_stats)
  init_fn = jax.jit(init_state, out_shardings=(state_sh, stats_sh))
  from_params = jax.jit(init_state, in_shardings=(p_sh,), out_shardings=(state_sh, stats_sh),
                        donate_argnums=0)
  return Built(cfg=cfg, env=env, model=model, policy=policy, tx=tx, mesh=mesh,
               text_table=text_table(cfg, env), state_shardings=state_sh,
               env_stats_shardings=stats_sh, abstract_state=(abstract_state, abstract_stats),
               init_fn=init_fn, replicated_params=fallbacks, state_from_params=from_params)
