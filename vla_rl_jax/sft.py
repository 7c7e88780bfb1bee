"""Behaviour cloning on demonstrations: the dataset of (observation, action chunk) examples and
make_sft_step, cross-entropy on the action tokens, jitted and sharded like the RL step.

Every control step t of every demonstration is one example (not only the steps where a chunk would
start: with one demonstration per task that is K times more data, and the policy must act from any
state the RL rollout reaches). Its observation is what the config's camera saw before action t
(`image_<camera>[t]`), the episode's instruction and `proprio[t]`; its targets are the bins of
actions t .. t + K - 1 (step-major, L = K * D tokens, as `Policy.sample` decodes them). Targets past
the episode's end are masked out of the loss and the accuracy.

The whole dataset lives on every device (replicated, loaded once; minibatches are drawn with
replacement from a key folded with the step, gathered into the batch shards): that holds about
H * W * 3 + 4 * (S + P + 2 * L) bytes per example (about 4 KB at 32 x 32, 151 KB at 224 x 224), so
it suits the tiny and small configs with tens of demonstrations per task;
`config.sft.max_dataset_mb` refuses a larger one at start-up.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from envs.base import policy_image, views
from vla_rl_jax import demos as demos_lib
from vla_rl_jax import integrity, sharding
from vla_rl_jax.builders import Built
from vla_rl_jax.config import Config
from vla_rl_jax.models import tokenizer
from vla_rl_jax.types import PolicyObs, TrainState

SFT_STREAM = 0x5F7  # minibatch draws: fold_in(fold_in(root, SFT_STREAM), step)


@struct.dataclass
class SFTData:
  """Every demonstration step as one example (E examples).

  image:   uint8[E, H, W, 3]   the config's camera before action t
  text:    int32[E, S]         the episode's instruction tokens
  proprio: float32[E, P]
  tokens:  int32[E, L]         bins of actions t .. t + K - 1 (0 past the episode's end)
  mask:    float32[E, L]       1 where the token's action step is inside the episode
  """
  image: Any
  text: Any
  proprio: Any
  tokens: Any
  mask: Any

  @property
  def num_examples(self) -> int:
    return int(self.tokens.shape[0])

  @property
  def nbytes(self) -> int:
    return sum(int(np.asarray(x).nbytes) for x in jax.tree_util.tree_leaves(self))


def state_config(cfg: Config) -> Config:
  """The config an SFT run is built, checkpointed and saved (config.json) with: cfg with the
  optimiser's learning rate set to sft.learning_rate (no warm-up) and no KL reference (its state
  holds none), so `launch.eval` and `train.init_from` rebuild exactly the state it saved."""
  optim = dataclasses.replace(cfg.optim, learning_rate=cfg.sft.learning_rate, warmup_steps=0)
  return dataclasses.replace(cfg, optim=optim, rl=dataclasses.replace(cfg.rl, kl_coef=0.0))


def check_manifest(cfg: Config, directory: str) -> dict[str, Any]:
  """The demonstrations' manifest, checked against cfg before anything is built: DemoError (one
  line) when it is missing, made for another env, lacks the config's camera or has another
  image size."""
  if not directory:
    raise demos_lib.DemoError("config.sft.demos is empty: give a demonstration directory "
                              "(python -m launch.make_demos --out=DIR), e.g. --config.sft.demos=DIR")
  if not os.path.isdir(directory):
    raise demos_lib.DemoError(f"config.sft.demos={directory}: no such directory")
  try:
    m = demos_lib.read_manifest(directory)
  except (OSError, ValueError) as e:
    raise demos_lib.DemoError(f"config.sft.demos={directory}: {e}") from None
  if m.get("env") != cfg.env.name:
    raise demos_lib.DemoError(
        f"config.sft.demos={directory} holds demonstrations of env {m.get('env')!r}, but "
        f"config.env.name={cfg.env.name!r}")
  missing = [c for c in views(cfg.env.camera) if c not in m.get("cameras", [])]
  if missing:
    raise demos_lib.DemoError(
        f"config.sft.demos={directory} recorded cameras {m.get('cameras')}, not {missing[0]!r} "
        f"of config.env.camera={cfg.env.camera!r}")
  size = [cfg.env.image_size, cfg.env.image_size]
  if list(m.get("image_size", [])) != size:
    h, w = m.get("image_size", ["?", "?"])
    raise demos_lib.DemoError(
        f"config.sft.demos={directory} holds {h}x{w} images, but config.env.image_size="
        f"{cfg.env.image_size} ({size[0]}x{size[1]}): make the demonstrations with "
        f"--image_size={cfg.env.image_size} or set --config.env.image_size={h}")
  if not m.get("episodes"):
    raise demos_lib.DemoError(f"config.sft.demos={directory} lists no episodes")
  return m


def chunk_targets(actions: np.ndarray, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
  """actions f32[T, D] -> (tokens i32[T, K * D], mask f32[T, K * D]): for each step t the bins of
  actions t .. t + K - 1, step-major; steps past T are masked (their bins are 0)."""
  t, d = actions.shape
  idx = np.arange(t)[:, None] + np.arange(chunk_size)[None, :]            # [T, K]
  inside = idx < t
  chunk = np.where(inside[..., None], actions[np.minimum(idx, t - 1)], 0.0)  # [T, K, D]
  bins = np.asarray(tokenizer.actions_to_bins(chunk), np.int32) * inside[..., None]
  mask = np.broadcast_to(inside[..., None], (t, chunk_size, d)).astype(np.float32)
  return bins.reshape(t, chunk_size * d), mask.reshape(t, chunk_size * d)


def load_dataset(cfg: Config, env: Any, directory: str) -> SFTData:
  """Every step of every demonstration in `directory` as host arrays (see SFTData). DemoError
  (one line) when the demonstrations do not fit cfg and env: another env, camera or image size
  (check_manifest), another action or proprio size, an instruction longer than
  model.max_text_len, or more than sft.max_dataset_mb in all."""
  check_manifest(cfg, directory)
  k, d, p = cfg.policy.chunk_size, env.action_size, env.proprio_size
  parts: dict[str, list[np.ndarray]] = {f: [] for f in ("image", "text", "proprio", "tokens", "mask")}
  nbytes, limit = 0, cfg.sft.max_dataset_mb * 2**20
  for ep in demos_lib.episodes(directory):
    name = ep["meta"]["file"]
    acts = np.asarray(ep["actions"], np.float32)
    t = acts.shape[0]
    if acts.ndim != 2 or acts.shape[1] != d:
      raise demos_lib.DemoError(
          f"config.sft.demos={directory}: {name} has {acts.shape[-1]}-D actions, env "
          f"{cfg.env.name!r} takes {d}-D actions")
    prop = np.asarray(ep.get("proprio", np.zeros((t + 1, 0))), np.float32)
    if prop.shape[-1] != p:
      raise demos_lib.DemoError(
          f"config.sft.demos={directory}: {name} has {prop.shape[-1]}-D proprio, env "
          f"{cfg.env.name!r} gives {p}-D")
    if t == 0:
      continue
    try:
      text = tokenizer.for_model(cfg.model).encode(ep["meta"]["instruction"],
                                                   cfg.model.max_text_len)
    except ValueError as e:
      raise demos_lib.DemoError(f"config.sft.demos={directory}: {name}: {e}") from None
    tokens, mask = chunk_targets(acts, k)
    parts["image"].append(np.asarray(policy_image(ep, cfg.env.camera)[:t], np.uint8))
    parts["text"].append(np.broadcast_to(text, (t, text.shape[0])))
    parts["proprio"].append(prop[:t])
    parts["tokens"].append(tokens)
    parts["mask"].append(mask)
    nbytes += sum(x[-1].nbytes for x in parts.values())
    if nbytes > limit:
      raise demos_lib.DemoError(
          f"config.sft.demos={directory}: the examples take more than config.sft.max_dataset_mb="
          f"{cfg.sft.max_dataset_mb:g} MB, and the whole dataset is held on every device; use "
          f"fewer or smaller demonstrations, or raise the limit if the devices hold it")
  if not parts["tokens"]:
    raise demos_lib.DemoError(f"config.sft.demos={directory}: every episode is empty")
  return SFTData(**{f: np.concatenate(v) for f, v in parts.items()})


def sft_loss(policy, params, obs: PolicyObs, tokens: jax.Array, mask: jax.Array):
  """Mean cross-entropy over the valid action tokens of a minibatch (untempered logits: the
  policy's own distribution) -> (loss, {token_accuracy, bin_error}). token_accuracy: how often the
  greedy token is the demonstrated one; bin_error: mean |greedy bin - demonstrated bin|."""
  logp_all = jax.nn.log_softmax(policy.apply_fn(params, obs), axis=-1)    # [B, L, 256]
  logp = jnp.take_along_axis(logp_all, tokens[..., None], axis=-1)[..., 0]
  n = jnp.maximum(jnp.sum(mask), 1.0)
  loss = -jnp.sum(logp * mask) / n
  greedy = jnp.argmax(logp_all, axis=-1)
  acc = jnp.sum((greedy == tokens) * mask) / n
  err = jnp.sum(jnp.abs(greedy - tokens) * mask) / n
  return loss, {"token_accuracy": acc, "bin_error": err}


def make_sft_step(b: Built, batch_size: int):
  """Returns the jitted, sharded, donating SFT step:

      sft_step(state: TrainState, data: SFTData) -> (state, metrics)

  One AdamW update (b.tx) on `batch_size` examples drawn with replacement (key: fold_in(fold_in(
  state.rng, SFT_STREAM), state.step)); the state is sharded by the same rules as RL's, the data
  replicated, the minibatch over the mesh's batch axes."""
  mesh = b.mesh
  grad_fn = jax.value_and_grad(lambda p, o, t, m: sft_loss(b.policy, p, o, t, m), has_aux=True)
  constrain = lambda t: sharding.constrain_batch(t, mesh)  # noqa: E731

  def step_fn(state: TrainState, data: SFTData):
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, SFT_STREAM), state.step)
    idx = constrain(jax.random.randint(rng, (batch_size,), 0, data.tokens.shape[0]))
    mb = constrain(jax.tree_util.tree_map(lambda x: x[idx], data))
    obs = PolicyObs(image=mb.image, text=mb.text, proprio=mb.proprio)
    (loss, aux), grads = grad_fn(state.params, obs, mb.tokens, mb.mask)
    updates, opt_state = b.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(aux, loss=loss, grad_norm=optax.tree.norm(grads),
                   valid_tokens=jnp.sum(mb.mask),
                   nonfinite_state=integrity.nonfinite_count((params, opt_state)))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  repl = sharding.replicated(mesh)
  data_sh = SFTData(image=repl, text=repl, proprio=repl, tokens=repl, mask=repl)
  return jax.jit(step_fn, in_shardings=(b.state_shardings, data_sh),
                 out_shardings=(b.state_shardings, repl), donate_argnums=(0,))
