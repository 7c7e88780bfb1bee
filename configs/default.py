"""Default GRPO configuration: `get_config("variant=tiny,env=fake_reach")`.

The argument after the colon in `--config=configs/default.py:ARG` is a comma-separated list of
key=value pairs. Keys: variant (tiny|small|base|7b), env (a registered env name). Any field can then be
overridden with `--config.rl.group_size=8` style flags.

Sizes: tiny is the CPU test model (TinyVLA, model.name="tiny_vla"); small, base and 7b are OpenVLA-OFT's
architecture (model.name="oft", vla_rl_jax/models/oft.py) at about 225M, 1.15B and 7.50B parameters
(docs/models.md has the counts against the published shapes).
"""

import ml_collections

from vla_rl_jax.config import VARIANTS  # config validation knows the sizes too
from vla_rl_jax.rl import registry as rl_registry
SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")

# Per-env defaults applied before the variant: episode length T, image size, chunk K.
# LIBERO: 512 control steps (64 calls of 8 actions) at full size; tiny runs keep the chunk and cut T.
# kwargs: preset values of the env constructor's options; get_config fills in every other declared
# option (envs.registry.kwargs_schema) with its default, so `--config.env.kwargs.<name>=...` can set
# any of them (a locked ConfigDict refuses a field it does not hold).
ENV_PRESETS = {
    "fake_reach": dict(episode_length=16, image_size=32, chunk_size=4, camera="agentview", kwargs={}),
    # T = 128 > the scripted expert's 95th-percentile episode under LIBERO's controller (about 90
    # control steps; tests/task_test.py measures it)
    # LIBERO's initial-state spread (3 cm, fixed yaw) as in the four suites; the env's own default
    # (layout=wide, 16 cm regions and any bowl yaw) stays for the tests and benchmarks that build it
    "libero_bowl_on_plate": dict(episode_length=128, image_size=32, chunk_size=8, camera="agentview",
                                 max_text_len=96, kwargs=dict(layout="libero")),
}
# LIBERO's four suites, ten tasks each in one scene (envs/tasks/libero_suite.py): the evaluators'
# per-suite limits (openpi / OpenVLA-OFT: 220, 280, 300, 520 control steps after LIBERO's 10 no-op
# warm-up steps, which the env runs inside reset); SimpleVLA-RL uses 512 for all (the `base` variant).
for _suite, _t in (("libero_spatial", 220), ("libero_object", 280), ("libero_goal", 300),
                   ("libero_10", 520)):
  ENV_PRESETS[_suite] = dict(episode_length=_t, image_size=32, chunk_size=8, camera="agentview",
                             max_text_len=96, kwargs=dict(protocol="held_out", num_steps_wait=10))
# pretraining tasks on LIBERO's main table (launch.pretrain): libero_spatial's limit, image size,
# chunk and text length, so its parameters initialise SFT / RL on any of the four suites
ENV_PRESETS["libero_pretrain"] = dict(episode_length=220, image_size=32, chunk_size=8,
                                      camera="agentview", max_text_len=96,
                                      kwargs=dict(protocol="held_out", num_steps_wait=10))


def parse_arg(arg: str | None, allowed: dict[str, tuple[str, ...] | None]) -> dict[str, str]:
  """Parses 'k=v,k=v'; unknown keys fail with the list of allowed ones."""
  out: dict[str, str] = {}
  for item in filter(None, (arg or "").split(",")):
    if "=" not in item:
      raise ValueError(f"config argument {item!r} must look like key=value; allowed keys: {sorted(allowed)}")
    k, v = (s.strip() for s in item.split("=", 1))
    if k not in allowed:
      raise ValueError(f"unknown config argument key {k!r}; allowed keys: {sorted(allowed)}")
    if allowed[k] is not None and v not in allowed[k]:
      raise ValueError(f"config argument {k}={v!r} not allowed; choose one of {list(allowed[k])}")
    out[k] = v
  return out


def env_defaults(name: str) -> dict:
  """Every option the env declares, at its default ({} for an unknown env or one declaring none:
  config validation names the problem)."""
  from envs import registry  # noqa: PLC0415  (imports the env's module, not its assets)
  try:
    schema = registry.kwargs_schema(name)
  except ValueError:
    return {}
  return schema.defaults() if schema is not None else {}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(arg, {"variant": VARIANTS, "env": None})
  variant = args.get("variant", "tiny")
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.seed = 0

  c.env = ml_collections.ConfigDict()
  c.env.name = args.get("env", "fake_reach")
  c.env.episode_length = 16          # control steps T per episode
  c.env.image_size = 32              # square images, H = W
  c.env.camera = "agentview"         # the camera the policy sees
  c.env.kwargs = ml_collections.ConfigDict()  # passed to the env constructor

  c.model = ml_collections.ConfigDict()
  c.model.name = "tiny_vla"
  c.model.patch_size = 8
  c.model.width = 64
  c.model.depth = 2
  c.model.num_heads = 4
  c.model.mlp_dim = 128
  c.model.max_text_len = 32
  c.model.vocab_size = 515           # 259 byte/special ids, then the 256 action-bin ids (last)
  c.model.tokenizer = "bytes"        # bytes | libero (the shipped SentencePiece) | a file path
  c.model.prompt = "plain"           # plain | openvla | a template with {instruction}
  c.model.num_bins = 256
  c.model.dtype = "float32"          # compute dtype (bfloat16 on accelerators)
  c.model.param_dtype = "float32"    # master weights
  c.model.ordinal_head = True        # extra logit term linear in the bin's action value
  c.model.ordinal_scale = 8.0
  # model.name="oft" only (tiny_vla ignores them): the vision towers (depth 0 = off; depth counts the
  # blocks run, OpenVLA reads the second-to-last), the Llama decoder's extras, and scale features
  c.model.siglip = ml_collections.ConfigDict(dict(width=0, depth=0, num_heads=0, mlp_dim=0,
                                                  num_registers=0))
  c.model.dinov2 = ml_collections.ConfigDict(dict(width=0, depth=0, num_heads=0, mlp_dim=0,
                                                  num_registers=0))
  c.model.num_kv_heads = 0           # 0 = num_heads (no GQA)
  c.model.norm_eps = 1e-5
  c.model.rope_theta = 10000.0
  c.model.use_proprio = False        # SimpleVLA-RL's LIBERO setting feeds no proprioception
  c.model.scan_layers = True
  c.model.remat = "none"             # none | full | dots | dots_no_batch (per block)

  c.policy = ml_collections.ConfigDict()
  c.policy.chunk_size = 4            # K actions per policy call
  c.policy.temperature = 1.6         # rollout sampling (the paper's value)
  c.policy.eval_temperature = 0.0    # 0 = greedy

  c.rl = ml_collections.ConfigDict()
  c.rl.num_prompts = 16              # B initial states per step
  c.rl.group_size = 8                # G rollouts per initial state
  c.rl.advantage = "grpo"
  c.rl.advantage_kwargs = ml_collections.ConfigDict(rl_registry.prefill("advantage"))
  c.rl.adv_eps = 1e-6
  c.rl.loss = "ppo_clip"
  # every option any registered loss (advantage) declares, at its default, so each can be set by
  # flag; validation keeps those of the chosen one (vla_rl_jax.rl.registry)
  c.rl.loss_kwargs = ml_collections.ConfigDict(rl_registry.prefill("loss"))
  c.rl.clip_low = 0.2
  c.rl.clip_high = 0.28              # clip-higher
  c.rl.kl_coef = 0.0
  c.rl.entropy_coef = 0.0
  c.rl.dynamic_sampling = True
  c.rl.num_epochs = 1
  c.rl.minibatch_size = 32           # trajectories per optimiser step
  c.rl.oversample = 1                # > 1: roll out oversample x num_prompts groups, keep num_prompts
                                     # informative ones (the reference's dynamic sampling)
  c.rl.grad_accum = "off"            # "off": one value_and_grad over every policy call; "per_call":
                                     # the same gradient one call of one micro-batch at a time
  c.rl.micro_batch_size = 0          # per_call: trajectories per micro-batch per block (0: all)
  c.rl.remat_calls = False           # off: jax.checkpoint each policy call's forward

  c.rollout = ml_collections.ConfigDict()
  c.rollout.store = "auto"           # per call: "images" | "scene" (renderer inputs) | "auto"
  c.rollout.policy_microbatch = 0    # envs per batch shard per policy forward (0: all at once)

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 3e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.01
  c.optim.grad_clip = 1.0
  c.optim.warmup_steps = 0

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                   # -1: all devices not used by the other axes
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.dcn_data = 1                # slices the data axis spans over DCN (multi-slice TPU)
  c.mesh.max_replicated_mb = 64.0    # fsdp/tensor > 1: larger fallback-replicated params fail

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 60
  c.train.log_every = 1
  c.train.checkpoint_every = 20
  c.train.keep_checkpoints = 3
  c.train.eval_every = 20
  c.train.eval_num_states = 64       # held-out initial states for greedy evaluation
  c.train.init_from = ""             # a workdir (launch.sft's) whose parameters a FRESH run starts
                                     # from; a run resuming its own checkpoint ignores it
  c.train.init_step = -1             # that workdir's checkpoint step (-1: its newest that verifies)

  c.distributed = ml_collections.ConfigDict()
  c.distributed.num_processes = 1
  c.distributed.process_id = -1      # -1: taken from the cluster environment
  c.distributed.coordinator_address = ""   # HOST:PORT of process 0 ("" = cluster environment)
  c.distributed.coordinator_bind_address = ""  # "" = listen on coordinator_address only
  c.distributed.initialization_timeout = 300   # seconds to wait for every process to join

  # LIBERO-style envs without their own entry (new tasks, test tasks) take the LIBERO preset
  fallback = ENV_PRESETS["libero_bowl_on_plate"] if c.env.name.startswith("libero") else {}
  preset = ENV_PRESETS.get(c.env.name, fallback)
  for k in ("episode_length", "image_size", "camera"):
    if k in preset:
      c.env[k] = preset[k]
  if "chunk_size" in preset:
    c.policy.chunk_size = preset["chunk_size"]
  # constructor options belong to the preset's own env: a fallback lends its shapes, never its kwargs
  own = ENV_PRESETS.get(c.env.name, {}).get("kwargs", {})
  c.env.kwargs = ml_collections.ConfigDict({**env_defaults(c.env.name), **own})
  if "max_text_len" in preset:  # byte tokens: LIBERO's longest instruction is about 90 bytes
    c.model.max_text_len = preset["max_text_len"]
  libero = c.env.name.startswith("libero")
  if libero:
    # the paper's dynamic sampling: keep drawing until the batch holds informative groups (here a
    # fixed 2x oversampling in the same compiled step; metrics report how often it fell short)
    c.rl.oversample = 2

  def oft(siglip, dinov2, width, depth, heads, mlp, kv_heads=0):
    c.model.name, c.model.ordinal_head, c.model.vocab_size = "oft", False, 32000
    c.model.tokenizer = "libero"     # the shipped 512-piece SentencePiece (an import sets its own)
    c.model.siglip.update(dict(zip(("width", "depth", "num_heads", "mlp_dim"), siglip)))
    c.model.dinov2.update(dict(zip(("width", "depth", "num_heads", "mlp_dim", "num_registers"),
                                   dinov2)))
    c.model.width, c.model.depth, c.model.num_heads, c.model.mlp_dim = width, depth, heads, mlp
    c.model.num_kv_heads = kv_heads

  if variant == "small":
    # one SigLIP-B/16-like tower, a 12-layer 768-wide Llama: about 225M parameters (49M of them the 32000-token embedding and head)
    c.env.image_size = 64
    c.model.patch_size = 16
    oft((768, 12, 12, 3072), (0, 0, 0, 0, 0), 768, 12, 12, 2048)
    c.rl.num_prompts, c.rl.minibatch_size = 64, 128
    # each policy call's forward recomputed in the backward pass: keeping all 16 calls' activations
    # of a 128-trajectory minibatch took 275 GB at 64 px and ran an H200 (141 GB) out of memory;
    # checkpointed, the compiled step's temporaries are 9.8 GB at 64 trajectories (CPU memory_analysis)
    c.rl.remat_calls = True
    c.train.num_steps = 500
    if libero and c.env.name not in SUITES:
      c.env.episode_length = 128
  elif variant in ("base", "7b"):
    c.env.image_size = 224             # OpenVLA-OFT's input size (rendered directly, no resize)
    c.env.episode_length = 512 if libero else 64
    c.policy.chunk_size = 8
    c.model.patch_size = 14
    c.model.dtype = "bfloat16"
    c.rl.num_prompts, c.rl.minibatch_size = 64, 128
    c.rl.grad_accum = "per_call"       # 64 calls x 128 trajectories of activations do not fit
    c.optim.learning_rate = 5e-6
    c.train.num_steps = 300
    if variant == "base":
      # two ViT-B/14 towers and a 16-layer 2048-wide Llama: about 1.15B parameters
      oft((768, 12, 12, 3072), (768, 12, 12, 3072, 4), 2048, 16, 16, 5632)
    else:
      # OpenVLA-OFT: SigLIP-So400m/14 (26 of 27 blocks run) + DINOv2-L/14 reg4 (23 of 24), Llama-2-7B
      oft((1152, 26, 16, 4304), (1024, 23, 16, 4096, 4), 4096, 32, 32, 11008, kv_heads=32)
      c.model.remat = "full"
  # The policy acts in whole chunks, so a horizon is rounded up to the next multiple of the chunk:
  # the evaluators' 220 and 300 (libero_spatial, libero_goal) become 224 and 304, never cut short
  # (these configs failed config validation before).
  k = c.policy.chunk_size
  c.env.episode_length = -(-c.env.episode_length // k) * k
  return c
