"""Benchmark settings: `--config=configs/benchmark.py:what=env|render|train|all[,env=NAME]`.

env:   physics / control steps per second of a task at each batch size, without rendering, with the
       agentview camera, and with both cameras; frames/s, compile seconds, peak memory.
render: the JAX ray caster per frame vs MuJoCo's own OpenGL renderer on the task's scene.
train: compile time and steady-state time of the fused train step (trajectories/s, action tokens/s,
       model FLOPs and MFU on accelerators) per env, swept over every combination of the train_*
       tuples below (empty: the single setting): model variant, initial states per step, chunk
       size, image size, cameras and mesh shape.
fused_vs_unfused: the fused train step against the unfused baseline of the same algorithm
       (vla_rl_jax/unfused.py: a Python loop over control steps, as the reference runs), same
       config, timed alternately in one run; prints `fused_unfused_ratio`.
suites: control steps/s of each LIBERO suite (ten tasks mixed in one batch, one camera) next to the
       single-task env and to the suite's task `suite_own_task` alone in its own scene, in the same
       run; contact pairs, step and reset compile seconds.
"""

import ml_collections

from configs.default import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_arg(arg, {"what": ("env", "render", "train", "suites", "fused_vs_unfused", "all"),
                         "env": None})
  c = ml_collections.ConfigDict()
  c.what = args.get("what", "all")
  c.env = args.get("env", "libero_bowl_on_plate")
  c.num_envs = (1, 64, 256, 1024)
  c.image_size = 128
  c.image_sizes = ()                   # the env bench sweeps these (empty: image_size only)
  c.cameras = ("agentview", "wrist")   # first = the policy's camera; both = the two-camera figure
  c.control_steps = 10                 # control steps per timed call (one lax.scan)
  c.repeats = 3                        # timed calls per setting (median reported)
  c.train_envs = ("fake_reach", "libero_bowl_on_plate")
  c.train_variant = "tiny"
  c.train_repeats = 3
  c.train_chunk_size = 4               # K for the train bench (0: the env preset's)
  c.train_num_prompts = 0              # initial states per step (0: the variant's); x group size
  c.train_dtype = ""                   # model compute dtype ("": the variant's; bfloat16 on GPUs)
  # sweeps (every combination is one compiled step and one row; empty = the single value above / the
  # preset's): variants, initial states per step, chunk sizes, image sizes, camera specs
  # ("agentview" or "agentview,wrist") and meshes "data,fsdp,tensor" (-1: the rest of the devices;
  # fake CPU devices: XLA_FLAGS=--xla_force_host_platform_device_count=8)
  c.train_variants = ()
  c.train_prompts = ()
  c.train_chunk_sizes = ()
  c.train_image_sizes = ()
  c.train_cameras = ()
  c.train_meshes = ()
  c.suites = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
  c.suite_single = "libero_bowl_on_plate"
  c.suite_num_envs = 256
  # each suite's task run alone (its own scene) next to its mixed batch (-1: not). Task 1: every
  # suite's task 1 relates objects to entities (On / In); a task that relates none (libero_goal 0,
  # 5, 7) is built alone with every object x entity contact pair, more than the ten-task scene has
  c.suite_own_task = 1
  c.ratio_envs = (args["env"],) if args.get("env") else ("fake_reach", "libero_bowl_on_plate")
  c.ratio_variant = "tiny"
  c.ratio_repeats = 2                   # the unfused LIBERO step takes minutes on a CPU
  c.ratio_num_prompts = 0              # initial states per step (0: the config's; fewer: quicker)
  # the persistent compilation cache is off so compile times are real (True: reuse it, and each row
  # says compilation_cache: true)
  c.compilation_cache = False
  return c
