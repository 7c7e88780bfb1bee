"""ConfigDict -> validated, frozen dataclasses: every derived value and every check lives here.

`resolve(config_dict, num_devices)` runs once at start-up. A bad value raises `ConfigError` naming the
field (`config.rl.group_size`), the value and what is allowed, before anything is compiled. Nothing
downstream sees a ConfigDict: closures capture these frozen (hashable) dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from typing import Any, Mapping

from envs import registry as env_registry
from envs import schema as env_schema

MODEL_NAMES = ("tiny_vla", "oft")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")      # models/oft.py maps them
STORE_MODES = ("auto", "images", "scene")                       # kept equal to rollout.STORE_MODES
DTYPES = ("float32", "bfloat16")
VARIANTS = ("tiny", "small", "base", "7b")                      # configs/default.py's sizes
GRAD_ACCUM = ("off", "per_call")                                # train_step.make_grad_fn's modes


class ConfigError(ValueError):
  """A configuration value is invalid; the message names the field and what is allowed."""


@dataclasses.dataclass(frozen=True)
class EnvConfig:
  name: str
  episode_length: int
  image_size: int
  camera: str
  kwargs: tuple[tuple[str, Any], ...] = ()


@dataclasses.dataclass(frozen=True)
class TowerConfig:
  """One ViT tower of the "oft" model (model.siglip, model.dinov2); depth 0 = the tower is off.
  depth counts the blocks actually run (OpenVLA reads the second-to-last block's output, so an
  importer drops the checkpoint's last block)."""
  width: int = 0
  depth: int = 0
  num_heads: int = 0
  mlp_dim: int = 0
  num_registers: int = 0        # DINOv2 only: register tokens beside the class token


_TOWERS = ("siglip", "dinov2")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  name: str
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  max_text_len: int
  vocab_size: int
  num_bins: int
  dtype: str
  param_dtype: str
  ordinal_head: bool = True
  ordinal_scale: float = 8.0
  # model.name="oft" only (models/oft.py); tiny_vla ignores them.
  siglip: TowerConfig = TowerConfig()
  dinov2: TowerConfig = TowerConfig()
  num_kv_heads: int = 0         # decoder key/value heads (GQA); 0 = model.num_heads
  norm_eps: float = 1e-5        # the decoder's RMSNorm epsilon (Llama-2)
  rope_theta: float = 10000.0
  use_proprio: bool = False     # one extra prefix token projected from obs.proprio
  scan_layers: bool = True      # each tower's and the decoder's blocks under nn.scan
  remat: str = "none"           # jax.checkpoint per block: none | full | dots | dots_no_batch
  tokenizer: str = "bytes"      # bytes | libero (shipped) | a .model / tokenizer.json path
  prompt: str = "plain"         # plain | openvla | a template holding {instruction}


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  chunk_size: int
  temperature: float
  eval_temperature: float


@dataclasses.dataclass(frozen=True)
class RLConfig:
  num_prompts: int
  group_size: int
  advantage: str
  adv_eps: float
  loss: str
  clip_low: float
  clip_high: float
  kl_coef: float
  entropy_coef: float
  dynamic_sampling: bool
  num_epochs: int
  minibatch_size: int
  # Dynamic sampling as the reference runs it: roll out oversample * num_prompts groups and keep
  # num_prompts informative ones (per batch shard); 1 = mask dropped groups in a fixed batch.
  oversample: int = 1
  # Minibatch shuffles and the oversampling choice are made within blocks of the trajectory axis
  # (0: one block per batch shard), so no trajectory moves between devices. A fixed value makes
  # results independent of the mesh (it must be a multiple of mesh.data * mesh.fsdp).
  shuffle_blocks: int = 0
  # The loss's and the advantage's declared hyperparameters (vla_rl_jax.rl.registry), every one
  # filled in, as sorted (name, value) pairs; a config saved before they existed gets the defaults.
  loss_kwargs: tuple[tuple[str, Any], ...] = ()
  advantage_kwargs: tuple[tuple[str, Any], ...] = ()
  # How the update's gradient is taken (vla_rl_jax.train_step.make_grad_fn). "off": one
  # value_and_grad over the minibatch and every policy call, keeping every call's activations
  # (tiny runs, tests). "per_call": score the minibatch without gradient, differentiate the loss
  # w.r.t. the log-prob/entropy arrays, then accumulate the parameter gradient one policy call of
  # one micro-batch at a time (the same update; peak activations of one call of one micro-batch;
  # what the small/base/7b variants use).
  grad_accum: str = "off"
  # per_call only: trajectories per micro-batch per shuffle block (one block per batch shard by
  # default); must divide rl.minibatch_size / num_blocks. 0 = the whole local minibatch.
  micro_batch_size: int = 0
  # "off" only: jax.checkpoint around each policy call's forward, so the single value_and_grad
  # keeps only the calls' inputs and recomputes each call's activations in the backward pass.
  remat_calls: bool = False


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
  store: str = "auto"           # per call: "images", "scene" (renderer inputs), "auto" (smaller)
  policy_microbatch: int = 0    # envs per batch shard per policy forward (0: all local envs)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  learning_rate: float
  b1: float
  b2: float
  weight_decay: float
  grad_clip: float
  warmup_steps: int


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int
  fsdp: int
  tensor: int
  # Slices (TPU; processes elsewhere) the data axis spans over DCN; 1 = one slice, one ICI mesh.
  dcn_data: int = 1
  # Under fsdp or tensor > 1, a parameter an axis does not divide stays whole on that axis; above
  # this many MB per device that is an error at build time (smaller ones are listed at start-up).
  max_replicated_mb: float = 64.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  num_steps: int
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int
  eval_every: int
  eval_num_states: int
  # A fresh run (no checkpoint of its own in its workdir) starts from the parameters of another
  # run's checkpoint, e.g. an SFT run's workdir: verified restore, parameters only (the optimiser
  # starts fresh; with rl.kl_coef > 0 the KL reference is these parameters). init_step: that run's
  # step (-1: its newest checkpoint that verifies). Ignored on resume: the run's own checkpoint wins.
  init_from: str = ""
  init_step: int = -1


@dataclasses.dataclass(frozen=True)
class SFTConfig:
  """Behaviour cloning on demonstrations (launch.sft); RL ignores this section."""
  demos: str = ""               # a launch.make_demos directory
  num_steps: int = 500          # optimiser updates
  batch_size: int = 64          # (observation, chunk) examples per update, over the batch shards
  learning_rate: float = 1e-3   # AdamW, with optim's betas, weight decay and clipping
  log_every: int = 10
  checkpoint_every: int = 100
  # The whole dataset (every demonstration step's image, proprio and target tokens) is put on
  # every device once; a larger one is refused at start-up rather than running out of memory.
  max_dataset_mb: float = 1024.0


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  num_processes: int
  process_id: int
  coordinator_address: str
  # seconds every process waits for all of them to join before the run stops with an error
  initialization_timeout: int = 300
  # where process 0's coordinator service listens: "" = the coordinator_address itself (one
  # interface, not all of them); "0.0.0.0:PORT" where hosts reach it through a NAT'd address
  coordinator_bind_address: str = ""


@dataclasses.dataclass(frozen=True)
class Config:
  variant: str
  seed: int
  env: EnvConfig
  model: ModelConfig
  policy: PolicyConfig
  rl: RLConfig
  rollout: RolloutConfig
  optim: OptimConfig
  mesh: MeshConfig
  train: TrainConfig
  distributed: DistributedConfig
  sft: SFTConfig = SFTConfig()

  # Derived values (one place).
  @property
  def num_trajectories(self) -> int:
    """N = B * G trajectories per RL step."""
    return self.rl.num_prompts * self.rl.group_size

  @property
  def num_calls(self) -> int:
    """C = T / K policy calls per episode."""
    return self.env.episode_length // self.policy.chunk_size

  @property
  def num_rollout_trajectories(self) -> int:
    """Trajectories rolled out per RL step (oversample * N; the update keeps N)."""
    return self.rl.oversample * self.num_trajectories

  @property
  def num_blocks(self) -> int:
    """Blocks of the trajectory axis that shuffles stay within (rl.shuffle_blocks, 0 = shards)."""
    return self.rl.shuffle_blocks or self.batch_shards

  @property
  def num_minibatches(self) -> int:
    return self.num_trajectories // self.rl.minibatch_size

  @property
  def batch_shards(self) -> int:
    """Devices the trajectory axis is split over (data x fsdp)."""
    return self.mesh.data * self.mesh.fsdp


_SECTIONS = {
    "env": EnvConfig, "model": ModelConfig, "policy": PolicyConfig, "rl": RLConfig,
    "rollout": RolloutConfig,
    "optim": OptimConfig, "mesh": MeshConfig, "train": TrainConfig, "distributed": DistributedConfig,
    "sft": SFTConfig,
}


# Sections whose fields all have defaults: configs written before they existed still load.
_OPTIONAL_SECTIONS = ("rollout", "sft")


def _fail(field: str, value: Any, allowed: str) -> None:
  raise ConfigError(f"config.{field}={value!r}: {allowed}")


INT32_MAX = 2**31 - 1   # ints reach jit as int32 constants and shapes: larger ones overflow there
SEED_MAX = 2**32 - 1    # jax.random.PRNGKey takes a uint32 seed


def _unknown(where: str, unknown: list[str], known) -> None:
  """One line: the first unknown field, the closest known one, the rest that were unknown."""
  close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
  hint = f"did you mean {close[0]!r}?" if close else f"known fields: {sorted(known)}"
  more = f" (also unknown: {unknown[1:]})" if len(unknown) > 1 else ""
  raise ConfigError(f"{where}.{unknown[0]}: unknown field; {hint}{more}")


def _section(name: str, cls: type, raw: Mapping[str, Any]):
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(raw) - set(fields))
  if unknown:
    _unknown(f"config.{name}", unknown, fields)
  missing = sorted(k for k, f in fields.items()
                   if k not in raw and f.default is dataclasses.MISSING)
  if missing:
    raise ConfigError(f"config.{name} is missing field(s) {missing}")
  values = {}
  for k, f in fields.items():
    if k not in raw:
      continue
    v = raw[k]
    if f.type == "TowerConfig":
      v = _tower(f"{name}.{k}", v)
    elif k in _KWARGS_FIELDS:
      if not isinstance(v, (Mapping, tuple)):
        _fail(f"{name}.{k}", v, f"must be a mapping of the {_KWARGS_FIELDS[k]}'s options")
      v = tuple(sorted((kk, _freeze(vv)) for kk, vv in dict(v).items()))
    elif f.type in ("int",):
      if isinstance(v, bool) or not isinstance(v, int):
        _fail(f"{name}.{k}", v, "must be an integer")
      if not -INT32_MAX - 1 <= v <= INT32_MAX:
        _fail(f"{name}.{k}", v, f"must fit in int32 (|value| < 2**31): it reaches jit as one")
    elif f.type in ("float",):
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(f"{name}.{k}", v, "must be a finite number")
      v = float(v)
    elif f.type in ("bool",):
      if not isinstance(v, bool):
        _fail(f"{name}.{k}", v, "must be True or False")
    elif f.type in ("str",):
      if not isinstance(v, str):
        _fail(f"{name}.{k}", v, "must be a string")
    values[k] = v
  return cls(**values)


def _tower(where: str, v: Any) -> TowerConfig:
  """A tower sub-section ({width, depth, num_heads, mlp_dim, num_registers}) -> TowerConfig."""
  if isinstance(v, TowerConfig):
    return v
  if not isinstance(v, Mapping):
    _fail(where, v, "must be a section {width, depth, num_heads, mlp_dim[, num_registers]}")
  fields = [f.name for f in dataclasses.fields(TowerConfig)]
  unknown = sorted(set(v) - set(fields))
  if unknown:
    _unknown(f"config.{where}", unknown, fields)
  for k, x in v.items():
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
      _fail(f"{where}.{k}", x, "must be an integer >= 0")
  return TowerConfig(**dict(v))


# fields holding a mapping of options -> whose options they are
_KWARGS_FIELDS = {"kwargs": "env", "loss_kwargs": "loss", "advantage_kwargs": "advantage"}


def _freeze(v: Any) -> Any:
  """Lists (JSON) and tuples alike become tuples, so configs hash and survive a JSON round trip."""
  if isinstance(v, (list, tuple)):
    return tuple(_freeze(x) for x in v)
  if isinstance(v, Mapping):
    return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
  return v


_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.\-_]*[A-Za-z0-9])?):(\d{1,5})$")


def _host_port(addr: str) -> bool:
  m = _HOST_PORT.match(addr)
  return bool(m) and 1 <= int(m.group(3)) <= 65535


def _positive(cfg: Config, *fields: str) -> None:
  for path in fields:
    section, name = path.split(".")
    v = getattr(getattr(cfg, section), name)
    if v <= 0:
      _fail(path, v, "must be > 0")


def resolve(config: Mapping[str, Any], num_devices: int | None = None) -> Config:
  """Validates a ConfigDict (or plain nested dict) and returns the frozen Config.

  num_devices: the global device count the mesh must cover (None skips mesh checks, e.g. for
  offline inspection); mesh.data = -1 is filled in from it.
  """
  raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  top = {"variant", "seed", *_SECTIONS}
  unknown = sorted(set(raw) - top)
  if unknown:
    _unknown("config", unknown, top)
  for k in top:
    if k not in raw and k not in _OPTIONAL_SECTIONS:
      raise ConfigError(f"config is missing the {k!r} field")
  for k in _SECTIONS:
    if k in raw and not isinstance(raw[k], Mapping):
      _fail(k, raw[k], "must be a section (a mapping of fields)")
  sections = {k: _section(k, cls, raw.get(k, {})) for k, cls in _SECTIONS.items()}
  if isinstance(raw["seed"], bool) or not isinstance(raw["seed"], int):
    _fail("seed", raw["seed"], "must be an integer")
  if not 0 <= raw["seed"] <= SEED_MAX:
    _fail("seed", raw["seed"], "must be in [0, 2**32) (jax.random.PRNGKey's uint32 seed)")
  if raw["variant"] not in VARIANTS:
    _fail("variant", raw["variant"], f"choose one of {list(VARIANTS)} (the size get_config built; "
          f"choose it in the config argument, configs/default.py:variant=...)")
  cfg = Config(variant=raw["variant"], seed=raw["seed"], **sections)

  _positive(cfg, "env.episode_length", "env.image_size", "model.patch_size", "model.width",
            "model.depth", "model.num_heads", "model.mlp_dim", "model.max_text_len",
            "policy.chunk_size", "rl.num_prompts", "rl.num_epochs", "rl.minibatch_size",
            "rl.adv_eps", "optim.learning_rate", "train.num_steps", "train.log_every",
            "train.checkpoint_every", "train.keep_checkpoints", "train.eval_every",
            "train.eval_num_states", "mesh.fsdp", "mesh.tensor", "mesh.dcn_data",
            "distributed.num_processes")
  _positive(cfg, "sft.num_steps", "sft.batch_size", "sft.learning_rate", "sft.log_every",
            "sft.checkpoint_every", "sft.max_dataset_mb")
  if cfg.train.init_step < -1:
    _fail("train.init_step", cfg.train.init_step,
          "must be -1 (the newest checkpoint of train.init_from) or a saved step >= 0")
  if cfg.train.init_step >= 0 and not cfg.train.init_from:
    _fail("train.init_step", cfg.train.init_step, "needs train.init_from (the run to start from)")
  if cfg.mesh.max_replicated_mb < 0:
    _fail("mesh.max_replicated_mb", cfg.mesh.max_replicated_mb,
          "must be >= 0 (MB per device a fallback-replicated parameter may hold)")

  if cfg.env.name not in env_registry.names():
    _fail("env.name", cfg.env.name, f"unknown env; registered envs: {list(env_registry.names())}")
  cfg = dataclasses.replace(cfg, env=_env_options(cfg.env))
  if cfg.model.name not in MODEL_NAMES:
    _fail("model.name", cfg.model.name, f"unknown model; choose one of {list(MODEL_NAMES)}")
  if cfg.model.dtype not in DTYPES:
    _fail("model.dtype", cfg.model.dtype, f"choose one of {list(DTYPES)}")
  if cfg.model.param_dtype != "float32":
    _fail("model.param_dtype", cfg.model.param_dtype,
          "must be 'float32': master weights in bf16 cannot absorb AdamW updates of ~lr (5e-6); "
          "use model.dtype='bfloat16' for bf16 compute")
  cfg = dataclasses.replace(cfg, rl=_rl_options(cfg.rl))
  if cfg.rl.group_size < 2:
    _fail("rl.group_size", cfg.rl.group_size,
          "must be >= 2 (group-relative advantages compare rollouts from one initial state)")
  if not 0.0 <= cfg.rl.clip_low < 1.0:
    _fail("rl.clip_low", cfg.rl.clip_low, "must be in [0, 1) (the ratio is clipped below at 1 - clip_low)")
  if cfg.rl.clip_high < 0.0:
    _fail("rl.clip_high", cfg.rl.clip_high, "must be >= 0 (the ratio is clipped above at 1 + clip_high)")
  for f in ("kl_coef", "entropy_coef"):
    if getattr(cfg.rl, f) < 0:
      _fail(f"rl.{f}", getattr(cfg.rl, f), "must be >= 0")
  if cfg.policy.temperature <= 0:
    _fail("policy.temperature", cfg.policy.temperature, "must be > 0 (sampling needs a temperature)")
  if cfg.policy.eval_temperature < 0:
    _fail("policy.eval_temperature", cfg.policy.eval_temperature, "must be >= 0 (0 means greedy)")
  if cfg.env.episode_length % cfg.policy.chunk_size:
    _fail("env.episode_length", cfg.env.episode_length,
          f"must be a multiple of policy.chunk_size={cfg.policy.chunk_size} (chunks run open-loop)")
  if cfg.env.image_size % cfg.model.patch_size:
    _fail("env.image_size", cfg.env.image_size,
          f"must be a multiple of model.patch_size={cfg.model.patch_size}")
  if cfg.model.width % cfg.model.num_heads:
    _fail("model.width", cfg.model.width, f"must be divisible by model.num_heads={cfg.model.num_heads}")
  if cfg.model.num_bins != 256:
    _fail("model.num_bins", cfg.model.num_bins, "must be 256 (OpenVLA's action-token layout)")
  _check_tokenizer(cfg.model)
  if cfg.rl.oversample < 1:
    _fail("rl.oversample", cfg.rl.oversample,
          "must be >= 1 (1: mask dropped groups; k > 1: roll out k * num_prompts groups and keep "
          "num_prompts informative ones)")
  if cfg.rl.oversample > 1 and not cfg.rl.dynamic_sampling:
    _fail("rl.oversample", cfg.rl.oversample,
          "must be 1 when rl.dynamic_sampling is False (oversampling fills the batch with "
          "informative groups, which only dynamic sampling defines)")
  if cfg.rl.grad_accum not in GRAD_ACCUM:
    _fail("rl.grad_accum", cfg.rl.grad_accum,
          f"choose one of {list(GRAD_ACCUM)} ('off': one value_and_grad over every policy call; "
          f"'per_call': accumulate the gradient one call of one micro-batch at a time)")
  if cfg.rl.micro_batch_size < 0:
    _fail("rl.micro_batch_size", cfg.rl.micro_batch_size,
          "must be >= 0 (trajectories per micro-batch per shuffle block; 0 = the whole local "
          "minibatch)")
  if cfg.rl.micro_batch_size and cfg.rl.grad_accum != "per_call":
    _fail("rl.micro_batch_size", cfg.rl.micro_batch_size,
          f"must be 0 when rl.grad_accum={cfg.rl.grad_accum!r} (micro-batches need "
          f"rl.grad_accum='per_call')")
  if cfg.rollout.store not in STORE_MODES:
    _fail("rollout.store", cfg.rollout.store, f"choose one of {list(STORE_MODES)}")
  if cfg.rollout.policy_microbatch < 0:
    _fail("rollout.policy_microbatch", cfg.rollout.policy_microbatch,
          "must be >= 0 (envs per batch shard per policy forward; 0 = all local envs at once)")
  if cfg.num_trajectories % cfg.rl.minibatch_size:
    _fail("rl.minibatch_size", cfg.rl.minibatch_size,
          f"must divide rl.num_prompts * rl.group_size = {cfg.num_trajectories}")
  if not 0.0 <= cfg.optim.b1 < 1.0 or not 0.0 <= cfg.optim.b2 < 1.0:
    _fail("optim.b1/b2", (cfg.optim.b1, cfg.optim.b2), "must be in [0, 1)")
  if cfg.optim.weight_decay < 0 or cfg.optim.grad_clip < 0 or cfg.optim.warmup_steps < 0:
    _fail("optim", (cfg.optim.weight_decay, cfg.optim.grad_clip, cfg.optim.warmup_steps),
          "weight_decay, grad_clip (0 = off) and warmup_steps must be >= 0")
  updates = cfg.train.num_steps * cfg.rl.num_epochs * max(cfg.num_minibatches, 1)
  if cfg.optim.warmup_steps > updates:
    _fail("optim.warmup_steps", cfg.optim.warmup_steps,
          f"must be <= the run's {updates} optimiser updates (train.num_steps * rl.num_epochs * "
          f"minibatches per step): a longer warm-up never reaches optim.learning_rate")
  _model_checks(cfg)
  if cfg.model.ordinal_scale <= 0:
    _fail("model.ordinal_scale", cfg.model.ordinal_scale,
          "must be > 0 (model.ordinal_head=False turns the ordinal term off)")
  for f in ("coordinator_address", "coordinator_bind_address"):
    addr = getattr(cfg.distributed, f)
    if addr and not _host_port(addr):
      _fail(f"distributed.{f}", addr,
            "must be HOST:PORT (a hostname, an IPv4 address or a bracketed IPv6 address, and a "
            "port in 1..65535), or '' (coordinator: from the cluster environment; bind: the "
            "coordinator address)")
  if cfg.distributed.coordinator_bind_address and not cfg.distributed.coordinator_address:
    _fail("distributed.coordinator_bind_address", cfg.distributed.coordinator_bind_address,
          "needs distributed.coordinator_address (with the address from the cluster environment, "
          "jax picks the bind address)")
  if not 1 <= cfg.distributed.initialization_timeout <= 86400:
    _fail("distributed.initialization_timeout", cfg.distributed.initialization_timeout,
          "must be in [1, 86400] seconds")
  pid = cfg.distributed.process_id
  if pid != -1 and not 0 <= pid < cfg.distributed.num_processes:
    _fail("distributed.process_id", pid,
          f"must be -1 (from the cluster environment) or in [0, {cfg.distributed.num_processes})")

  if num_devices is not None:
    cfg = _resolve_mesh(cfg, num_devices)
  return cfg


def _check_tokenizer(m: ModelConfig) -> None:
  """model.tokenizer loads (at start-up, not inside jit) and its text ids fit under the action bins:
  vocab_size >= text ids + num_bins, or == text ids (OpenVLA's layout: the action bins overwrite the
  last num_bins text ids)."""
  from vla_rl_jax.models import tokenizer as tokenizer_lib  # noqa: PLC0415
  try:
    tok = tokenizer_lib.get(m.tokenizer, m.prompt)
  except tokenizer_lib.TokenizerError as e:
    raise ConfigError(str(e)) from None
  n = tok.vocab_size
  if m.vocab_size < n + m.num_bins and not (m.vocab_size == n and n > m.num_bins):
    _fail("model.vocab_size", m.vocab_size,
          f"must be >= {n + m.num_bins} ({n} text ids of model.tokenizer={m.tokenizer!r}, then "
          f"{m.num_bins} action ids at the top of the vocabulary), or exactly {n} (OpenVLA's "
          f"layout: the action ids overwrite the last {m.num_bins} text ids)")


def _model_checks(cfg: Config) -> None:
  """The "oft" architecture's shape rules (models/oft.py), each naming its field."""
  m = cfg.model
  if m.remat not in REMAT_POLICIES:
    _fail("model.remat", m.remat, f"choose one of {list(REMAT_POLICIES)} (jax.checkpoint policy per "
          f"block: none = keep every activation, full = keep only block inputs, dots / "
          f"dots_no_batch = also keep matmul outputs)")
  if m.name != "oft":
    return
  if m.ordinal_head:
    _fail("model.ordinal_head", m.ordinal_head,
          "must be False for model.name='oft': its head is the LM head's last 256 columns, so "
          "imported weights score the action bins exactly as trained (no extra ordinal term)")
  if m.num_kv_heads < 0:
    _fail("model.num_kv_heads", m.num_kv_heads, "must be >= 0 (0 = model.num_heads)")
  kv = m.num_kv_heads or m.num_heads
  if m.num_heads % kv:
    _fail("model.num_kv_heads", m.num_kv_heads,
          f"must divide model.num_heads={m.num_heads} (each key/value head serves a group of "
          f"query heads)")
  if (m.width // m.num_heads) % 2:
    _fail("model.width", m.width, f"width / num_heads = {m.width / m.num_heads:g} must be even "
          f"(RoPE rotates pairs of each head's dimensions)")
  if m.norm_eps <= 0:
    _fail("model.norm_eps", m.norm_eps, "must be > 0")
  if m.rope_theta <= 0:
    _fail("model.rope_theta", m.rope_theta, "must be > 0")
  on = [t for t in _TOWERS if getattr(m, t).depth > 0]
  if not on:
    _fail("model.siglip.depth/model.dinov2.depth", (m.siglip.depth, m.dinov2.depth),
          "at least one vision tower must be on (depth > 0) for model.name='oft'")
  for t in on:
    tc = getattr(m, t)
    for f in ("width", "num_heads", "mlp_dim"):
      if getattr(tc, f) <= 0:
        _fail(f"model.{t}.{f}", getattr(tc, f), f"must be > 0 when model.{t}.depth > 0")
    if tc.width % tc.num_heads:
      _fail(f"model.{t}.width", tc.width, f"must be divisible by model.{t}.num_heads={tc.num_heads}")
  if m.siglip.num_registers:
    _fail("model.siglip.num_registers", m.siglip.num_registers,
          "must be 0 (SigLIP has no class or register tokens; DINOv2 has them)")


def _env_options(env: EnvConfig) -> EnvConfig:
  """The env's options checked by its own declared schema (envs.schema), every one filled in (so
  a saved config records them all), and the camera checked against the env's cameras."""
  try:
    kwargs = env_registry.check_kwargs(env.name, dict(env.kwargs), python=False)
  except env_schema.OptionError as e:
    _fail(f"env.kwargs.{e.name}", e.value, e.allowed)
  cameras = env_registry.cameras(env.name)
  from envs.base import views  # noqa: PLC0415
  names = views(env.camera)
  if len(set(names)) != len(names) or not all(names):
    _fail("env.camera", env.camera, "one camera, or different ones separated by commas (e.g. "
          "'agentview,wrist': the policy sees the views side by side)")
  for cam in names:
    if cameras is not None and cam not in cameras:
      close = difflib.get_close_matches(cam, cameras, n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      _fail("env.camera", env.camera, f"env {env.name!r} has cameras {list(cameras)}{hint}")
  return dataclasses.replace(env, kwargs=tuple(sorted((k, _freeze(v)) for k, v in kwargs.items())))


def _rl_options(rl: RLConfig) -> RLConfig:
  """rl.loss and rl.advantage checked against the registries as they are now (a loss registered
  by user code before resolve is valid), and their options against what each declares."""
  from vla_rl_jax.rl import registry  # noqa: PLC0415  (the built-ins import jax; resolve-time only)
  out = {}
  for kind in ("loss", "advantage"):
    name = getattr(rl, kind)
    known = registry.names(kind)
    if name not in known:
      close = difflib.get_close_matches(name, known, n=1) if isinstance(name, str) else []
      hint = f"did you mean {close[0]!r}? " if close else ""
      _fail(f"rl.{kind}", name, f"unknown {kind}; {hint}registered: {list(known)} (add one with "
            f"vla_rl_jax.rl.registry.register_{kind})")
    try:
      options = registry.resolve_options(kind, name, dict(getattr(rl, f"{kind}_kwargs")))
    except env_schema.OptionError as e:
      _fail(f"rl.{kind}_kwargs.{e.name}", e.value, e.allowed)
    out[f"{kind}_kwargs"] = tuple(sorted((k, _freeze(v)) for k, v in options.items()))
  return dataclasses.replace(rl, **out)


def _resolve_mesh(cfg: Config, num_devices: int) -> Config:
  m = cfg.mesh
  others = m.fsdp * m.tensor
  if m.data == -1:
    if num_devices % others:
      _fail("mesh", (m.data, m.fsdp, m.tensor),
            f"fsdp * tensor = {others} must divide the {num_devices} available devices")
    m = dataclasses.replace(m, data=num_devices // others)
  elif m.data <= 0:
    _fail("mesh.data", m.data, "must be -1 (fill) or > 0")
  if m.data * m.fsdp * m.tensor != num_devices:
    _fail("mesh", (m.data, m.fsdp, m.tensor),
          f"data * fsdp * tensor must equal the {num_devices} available devices")
  if m.data % m.dcn_data:
    _fail("mesh.dcn_data", m.dcn_data,
          f"must divide mesh.data={m.data}: each of the dcn_data slices holds data // dcn_data of "
          f"the data axis")
  cfg = dataclasses.replace(cfg, mesh=m)
  shards = cfg.batch_shards
  if cfg.num_trajectories % shards:
    _fail("rl.num_prompts", cfg.rl.num_prompts,
          f"num_prompts * group_size = {cfg.num_trajectories} must be divisible by the "
          f"{shards} batch shards (mesh.data * mesh.fsdp)")
  if cfg.rl.minibatch_size % shards:
    _fail("rl.minibatch_size", cfg.rl.minibatch_size,
          f"must be divisible by the {shards} batch shards (mesh.data * mesh.fsdp)")
  blocks = cfg.num_blocks
  if cfg.rl.shuffle_blocks < 0 or blocks % shards:
    _fail("rl.shuffle_blocks", cfg.rl.shuffle_blocks,
          f"must be 0 (one block per batch shard) or a positive multiple of the {shards} batch "
          f"shards (mesh.data * mesh.fsdp)")
  for f, v in (("rl.minibatch_size", cfg.rl.minibatch_size),
               ("rl.num_prompts * rl.group_size", cfg.num_trajectories)):
    if v % blocks:
      _fail("rl.shuffle_blocks", cfg.rl.shuffle_blocks,
            f"the {blocks} shuffle blocks must divide {f} = {v}")
  if cfg.rl.oversample > 1 and cfg.rl.num_prompts % blocks:
    _fail("rl.num_prompts", cfg.rl.num_prompts,
          f"must be divisible by the {blocks} shuffle blocks (rl.shuffle_blocks, default one per "
          f"batch shard) when rl.oversample > 1: each block keeps its own informative groups, so "
          f"no trajectory crosses devices")
  micro, mb_block = cfg.rl.micro_batch_size, cfg.rl.minibatch_size // blocks
  if micro and mb_block % micro:
    _fail("rl.micro_batch_size", micro,
          f"must divide the local minibatch rl.minibatch_size / {blocks} shuffle blocks = "
          f"{mb_block} (allowed: {[d for d in range(1, mb_block + 1) if mb_block % d == 0]}, "
          f"or 0 = all {mb_block})")
  mb_local = cfg.rollout.policy_microbatch
  local = cfg.num_rollout_trajectories // shards
  for what, local in (("trajectories each batch shard rolls out", local),
                      ("held-out states each batch shard evaluates",
                       cfg.train.eval_num_states // shards)):
    if mb_local and mb_local < local and local % mb_local:
      _fail("rollout.policy_microbatch", mb_local, f"must divide the {local} {what}")
  if cfg.sft.batch_size % shards:
    _fail("sft.batch_size", cfg.sft.batch_size, f"must be divisible by the {shards} batch shards "
          f"(mesh.data * mesh.fsdp)")
  eval_n = cfg.train.eval_num_states
  if eval_n % shards:
    _fail("train.eval_num_states", eval_n, f"must be divisible by the {shards} batch shards")
  return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
  """JSON-able nested dict (kwargs back to a mapping); `resolve(to_dict(cfg))` rebuilds cfg."""
  d = dataclasses.asdict(cfg)
  d["env"]["kwargs"] = dict(cfg.env.kwargs)
  d["rl"]["loss_kwargs"] = dict(cfg.rl.loss_kwargs)
  d["rl"]["advantage_kwargs"] = dict(cfg.rl.advantage_kwargs)
  return d


def dumps(cfg: Config) -> str:
  return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def loads(text: str, num_devices: int | None = None, *, fresh_topology: bool = False) -> Config:
  """Rebuilds a saved config. fresh_topology: forget the saved mesh/processes (evaluating or
  resuming on a different machine) and fill the mesh from num_devices instead."""
  raw = json.loads(text)
  if fresh_topology:
    raw["mesh"] = {"data": -1, "fsdp": 1, "tensor": 1}
    raw["distributed"] = {"num_processes": 1, "process_id": -1, "coordinator_address": ""}
  return resolve(raw, num_devices)


# Sections that may differ between a run and its resumption: the schedule, the process topology
# (and the SFT section, which only launch.sft reads: its schedule).
RESUMABLE_SECTIONS = ("train", "mesh", "distributed", "sft")
# Optimiser fields that may change on resume (a run stopped by non-finite values resumes from its
# last checkpoint with a lower learning rate). Whether gradient clipping and warm-up are on at all
# may not: they change the optimiser state's structure, which the checkpoint must match.
RESUMABLE_OPTIM = ("learning_rate", "grad_clip", "weight_decay", "b1", "b2", "warmup_steps")


def _optim_structure(optim: Mapping[str, Any]) -> tuple[bool, bool]:
  return (optim.get("grad_clip", 0) > 0, optim.get("warmup_steps", 0) > 0)


def resume_conflicts(saved: Mapping[str, Any], cfg: Config) -> list[str]:
  """Sections (or fields) of a saved (JSON) config that differ from cfg and forbid resuming it."""
  now = json.loads(dumps(cfg))
  saved = json.loads(json.dumps(saved, sort_keys=True))  # tuples and lists compare alike
  out = []
  if isinstance(saved.get("env"), Mapping):  # a run saved before its env declared every option
    try:
      env = dict(saved["env"])
      env["kwargs"] = env_registry.check_kwargs(env["name"], env.get("kwargs") or {})
      saved = {**saved, "env": json.loads(json.dumps(env, sort_keys=True))}
    except (ValueError, KeyError):
      pass  # an option the env no longer allows: the sections differ, reported below
  if isinstance(saved.get("rl"), Mapping):  # a run saved before losses declared their options
    try:
      rl = _rl_options(_section("rl", RLConfig, saved["rl"]))
      saved = {**saved, "rl": json.loads(json.dumps(
          {**dataclasses.asdict(rl), "loss_kwargs": dict(rl.loss_kwargs),
           "advantage_kwargs": dict(rl.advantage_kwargs)}, sort_keys=True))}
    except (ValueError, KeyError, TypeError):
      pass  # a loss or option no longer registered: the sections differ, reported below
  if isinstance(saved.get("model"), Mapping):  # a run saved before the oft fields existed
    saved = {**saved, "model": {**_defaults_json("model"), **saved["model"]}}
  for k in sorted(now):
    if k in RESUMABLE_SECTIONS or saved.get(k) == now[k]:
      continue
    if k == "optim" and isinstance(saved.get(k), Mapping):
      old, new = saved[k], now[k]
      fixed = sorted(f for f in set(old) | set(new)
                     if f not in RESUMABLE_OPTIM and old.get(f) != new.get(f))
      if _optim_structure(old) != _optim_structure(new):
        fixed.append("grad_clip/warmup_steps switched on or off")
      out.extend(f"optim ({f})" for f in fixed)
      continue
    out.append(k)
  return out


def resume_changes(saved: Mapping[str, Any], cfg: Config) -> list[str]:
  """The allowed optimiser changes a resumption makes, as 'optim.F: old -> new' lines."""
  now = json.loads(dumps(cfg)).get("optim", {})
  old = saved.get("optim", {}) if isinstance(saved.get("optim"), Mapping) else {}
  return [f"optim.{f}: {old[f]} -> {now[f]}" for f in RESUMABLE_OPTIM
          if f in old and f in now and old[f] != now[f]]


# What a run started from another run's parameters (train.init_from) must share with it: every
# field that shapes the parameters or changes what they compute. model.dtype (compute precision)
# may differ; the env's action and proprio sizes are compared on the built parameter shapes.
INIT_FIELDS = ("model.name", "model.patch_size", "model.width", "model.depth", "model.num_heads",
               "model.mlp_dim", "model.max_text_len", "model.vocab_size", "model.num_bins",
               "model.param_dtype", "model.ordinal_head", "model.ordinal_scale",
               "model.siglip", "model.dinov2", "model.num_kv_heads", "model.norm_eps",
               "model.rope_theta", "model.use_proprio", "model.scan_layers",
               "model.tokenizer", "model.prompt", "policy.chunk_size", "env.image_size", "env.camera")


def _defaults_json(section: str) -> dict[str, Any]:
  """The JSON form of a section's field defaults: a field a run saved before it existed counts as
  its default (a tiny_vla run saved before the oft fields resumes and initialises as before)."""
  cls = _SECTIONS[section]
  return json.loads(json.dumps({
      f.name: dataclasses.asdict(f.default) if dataclasses.is_dataclass(f.default) else f.default
      for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}))


def init_conflicts(saved: Mapping[str, Any], cfg: Config) -> list[tuple[str, Any, Any]]:
  """(field, saved value, this config's value) for each INIT_FIELDS entry where the run whose
  parameters cfg starts from (its saved JSON config) differs from cfg."""
  now = json.loads(dumps(cfg))
  out = []
  for path in INIT_FIELDS:
    section, name = path.split(".")
    sec = saved.get(section) if isinstance(saved.get(section), Mapping) else None
    old = sec.get(name) if sec is not None else None
    if sec is not None and name not in sec:
      old = _defaults_json(section).get(name)
    if old != now[section][name]:
      out.append((path, old, now[section][name]))
  return out
