"""Benchmarks: one JSON line per setting on stdout and nothing else (progress on stderr).

  python -m launch.benchmark --config=configs/benchmark.py:what=env
  python -m launch.benchmark --config=configs/benchmark.py:what=train
  python -m launch.benchmark --config=configs/benchmark.py:what=suites
  python -m launch.benchmark --config=configs/benchmark.py:what=fused_vs_unfused
  # a train sweep: every combination of the tuples is one compiled step and one row
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m launch.benchmark \
      --config=configs/benchmark.py:what=train --config.train_envs="('fake_reach',)" \
      --config.train_meshes="('8,1,1','1,8,1','1,4,2')" --config.train_chunk_sizes="(4,8)"

Honest numbers: compile time reported apart from run time and measured with the persistent
compilation cache OFF (`compilation_cache=True` in the config turns it on; each row says which),
warm-up excluded, outputs blocked on; min / median / max over repeats (rates from the median time;
`_min` / `_max` from the slowest / fastest repeat), the host's 1-minute load average when the row
is written, and the machine, library versions and git commit in every row.

Train rows carry the step's analytic model FLOPs (vla_rl_jax/flops.py): `model_flops_per_step`
(full horizon, every minibatch live: an upper bound), its rollout and update parts,
`model_flops_per_policy_call`, and the median repeat's actual count (`model_flops_step_actual`,
from its policy_calls and live minibatches); on an accelerator with a known peak also `mfu_step`,
`mfu_rollout` (the rollout compiled and timed alone) and `mfu_update` (step minus rollout time);
null on a CPU.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from launch.common import fail, loaded_config, parse_flags

_CONFIG = config_flags.DEFINE_config_file(  # no default: overrides are checked when flags parse
    "config", None,
    "Benchmark config, e.g. configs/benchmark.py:what=env|render|train|suites|fused_vs_unfused|all"
    ",env=NAME; override fields with --config.FIELD=VALUE (num_envs, image_size, repeats, "
    "train_variant, train_num_prompts, train_dtype, ratio_num_prompts, ...; see the file).")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the full traceback of an error instead of one line.")
flags.mark_flags_as_required(["config"])
PROG = "launch.benchmark"


@functools.cache
def _static_machine() -> dict:
  import importlib.metadata as md
  import jax
  d = jax.devices()[0]
  versions = {}
  for pkg in ("jax", "jaxlib", "flax", "mujoco", "mujoco-mjx"):
    try:
      versions[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      pass
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10,
                           cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    commit = commit + ("+dirty" if dirty and commit else "")
  except (OSError, subprocess.SubprocessError):
    commit = ""
  return {"platform": d.platform, "device_kind": d.device_kind, "num_devices": jax.device_count(),
          "host": platform.node(), "cpu_count": os.cpu_count(), "versions": versions,
          "git_commit": commit or None,
          "compilation_cache": bool(jax.config.jax_enable_compilation_cache)}


def _machine() -> dict:
  return {**_static_machine(), "load_avg_1m": os.getloadavg()[0],
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _peak_memory_mb() -> dict:
  import jax
  out = {"host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
  return out


def _times(fn, args, repeats: int) -> list[float]:
  """Seconds of each of `repeats` calls, outputs blocked on."""
  import jax
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return times


def _spread(prefix: str, times: list[float], work: float = 1.0, rate: bool = True) -> dict:
  """{prefix: median, prefix_min, prefix_max}: a rate (work / seconds) or the seconds themselves."""
  med = sorted(times)[len(times) // 2]
  if rate:
    return {prefix: work / med, f"{prefix}_min": work / max(times), f"{prefix}_max": work / min(times)}
  return {prefix: med, f"{prefix}_min": min(times), f"{prefix}_max": max(times)}


def emit(row: dict) -> None:
  print(json.dumps(row), flush=True)


def bench_env_setting(env_name: str, num_envs: int, cameras: tuple[str, ...], image_size: int,
                      control_steps: int, repeats: int, env_kwargs: dict | None = None) -> dict:
  """Control steps/s of `num_envs` envs stepping with random actions, rendering `cameras`."""
  import jax
  import jax.numpy as jnp
  from envs import registry
  from envs.base import image_key

  env = registry.make(env_name, image_size=image_size, cameras=cameras, **(env_kwargs or {}))

  def run(states, key):
    def body(carry, i):
      s, acc = carry
      a = jax.random.uniform(jax.random.fold_in(key, i), (num_envs, env.action_size), minval=-1, maxval=1)
      s = jax.vmap(env.step)(s, a)
      for c in cameras:  # consume images so rendering cannot be optimised away
        acc = acc + jnp.sum(s.obs[image_key(c)][:, ::37, ::37].astype(jnp.float32))
      return (s, acc), None
    (s, acc), _ = jax.lax.scan(body, (states, jnp.zeros(())), jnp.arange(control_steps))
    return s, acc

  keys = jax.random.split(jax.random.PRNGKey(0), num_envs)
  t = time.perf_counter()
  reset = jax.jit(jax.vmap(env.reset)).lower(keys).compile()
  reset_compile_s = time.perf_counter() - t
  states = reset(keys)
  t = time.perf_counter()
  run_c = jax.jit(run).lower(states, jax.random.PRNGKey(1)).compile()
  compile_s = time.perf_counter() - t
  jax.block_until_ready(run_c(states, jax.random.PRNGKey(1)))  # warm-up
  times = _times(run_c, (states, jax.random.PRNGKey(2)), repeats)
  work = num_envs * control_steps
  substeps = int(getattr(env, "substeps", 1))
  return {**_spread("control_steps_per_s", times, work),
          **_spread("physics_steps_per_s", times, work * substeps),
          **_spread("frames_per_s", times, work * len(cameras)),
          **_spread("seconds_per_call", times, rate=False),
          "compile_s": compile_s, "substeps": substeps, "reset_compile_s": reset_compile_s,
          "contact_pairs": int(env.mj_model.npair) if hasattr(env, "mj_model") else None}


def bench_env(cfg) -> None:
  for size in tuple(cfg.image_sizes) or (cfg.image_size,):
    for b in cfg.num_envs:
      _bench_env_row(cfg, b, size)


def _bench_env_row(cfg, b: int, image_size: int) -> None:
  row = {"bench": "env", "env": cfg.env, "num_envs": b, "image_size": image_size,
         "control_steps_per_call": cfg.control_steps}
  for label, cams in (("", ()), ("_render", tuple(cfg.cameras[:1])),
                      ("_render_both", tuple(cfg.cameras))):
    print(f"env {cfg.env} B={b} {image_size}px cameras={cams} ...", file=sys.stderr, flush=True)
    try:
      r = bench_env_setting(cfg.env, b, cams, image_size, cfg.control_steps, cfg.repeats)
    except Exception as e:  # e.g. out of memory at the largest batch: report, keep going
      row[f"error{label}"] = f"{type(e).__name__}: {str(e)[:200]}"
      continue
    # progress on stderr (the row comes once all three settings are done; a cut run keeps this)
    print(f"  compiled in {r['compile_s']:.1f} s, {r['control_steps_per_s']:.1f} control steps/s",
          file=sys.stderr, flush=True)
    for sfx in ("", "_min", "_max"):
      row[f"control_steps_per_s{label}{sfx}"] = r[f"control_steps_per_s{sfx}"]
      if not cams:
        row[f"physics_steps_per_s{sfx}"] = r[f"physics_steps_per_s{sfx}"]
      else:
        row[f"frames_per_s{label}{sfx}"] = r[f"frames_per_s{sfx}"]
    row[f"compile_s{label}"] = r["compile_s"]
    if not cams:
      row["substeps"] = r["substeps"]
  if "control_steps_per_s" in row and "control_steps_per_s_render" in row:
    # seconds of rendering per control step vs seconds of physics per control step
    # medians of separate timings: on a loaded machine this can come out negative (noise), and
    # the min/max rows say how far to trust it; clamped at 0 with the raw value kept
    physics = 1.0 / row["control_steps_per_s"]
    render = 1.0 / row["control_steps_per_s_render"] - physics
    row["render_over_physics_raw"] = render / physics
    row["render_over_physics"] = max(render / physics, 0.0)
  row.update(_peak_memory_mb(), **_machine())
  emit(row)


def bench_suites(cfg) -> None:
  """Mixed-task batches: each LIBERO suite as one env (all ten tasks in one scene; the batch's
  resets spread over them) stepping `suite_num_envs` envs with random actions and the policy's
  camera, next to the single-task env, in the same run; the step's and the reset's compile time.

  With `suite_own_task` >= 0 each suite also runs that one task alone (`task_ids=(k,)`: its own
  scene, none of the other tasks' entities) just before the mixed batch: `relative_to_own_task` is
  what mixing the ten tasks in one scene costs that task, apart from how heavy the task's own scene
  is (`relative_to_single_task` compares with `suite_single`, a lighter scene than any suite's)."""
  base = None
  settings = [(cfg.suite_single, None)]
  for name in cfg.suites:
    if cfg.suite_own_task >= 0:
      settings.append((name, (cfg.suite_own_task,)))
    settings.append((name, None))
  own = {}
  for name, task_ids in settings:
    label = name if task_ids is None else f"{name} task {task_ids[0]} alone"
    print(f"suite bench {label} B={cfg.suite_num_envs} ...", file=sys.stderr, flush=True)
    r = bench_env_setting(name, cfg.suite_num_envs, tuple(cfg.cameras[:1]), cfg.image_size,
                          cfg.control_steps, cfg.repeats,
                          None if task_ids is None else {"task_ids": task_ids})
    base = base or r["control_steps_per_s"]
    row = {"bench": "suite", "env": name, "task_ids": list(task_ids or ()),
           "num_envs": cfg.suite_num_envs, "camera": cfg.cameras[0], "image_size": cfg.image_size,
           **{k: v for k, v in r.items() if k.startswith("control_steps_per_s")},
           "relative_to_single_task": r["control_steps_per_s"] / base,
           "contact_pairs": r["contact_pairs"],
           "step_compile_s": r["compile_s"], "reset_compile_s": r["reset_compile_s"]}
    if task_ids is not None:
      own[name] = r["control_steps_per_s"]
    elif name in own:
      row["relative_to_own_task"] = r["control_steps_per_s"] / own[name]
    emit({**row, **_peak_memory_mb(), **_machine()})


def bench_render(cfg) -> None:
  """JAX ray caster at each batch size vs mujoco.Renderer (default and fastest settings), measured
  in the same run on the task's own scene and cameras."""
  from envs import registry
  from envs import render_bench

  env = registry.make(cfg.env, image_size=cfg.image_size, cameras=())
  mj_model = env.mj_model
  for cam in cfg.cameras:
    row = {"bench": "render", "env": cfg.env, "camera": cam, "image_size": cfg.image_size}
    for fast in (False, True):
      print(f"mujoco.Renderer {cam} fast={fast} ...", file=sys.stderr, flush=True)
      r = render_bench.bench_mujoco_renderer(mj_model, cam, cfg.image_size, cfg.image_size,
                                             repeats=200, fast=fast)
      row["mujoco_fast_frames_per_s" if fast else "mujoco_default_frames_per_s"] = r["frames_per_s"]
      if r["frames_per_s"] is None:
        row["mujoco_error"] = r.get("errors")
    for b in cfg.num_envs:
      if b > 256:
        continue  # the per-frame comparison is made at B <= 256
      print(f"jax renderer {cam} B={b} ...", file=sys.stderr, flush=True)
      r = render_bench.bench_render(mj_model, cam, b, cfg.image_size, cfg.image_size,
                                    repeats=cfg.repeats)
      row[f"jax_frames_per_s_B{b}"] = r["frames_per_s"]
      row[f"jax_compile_s_B{b}"] = r["compile_s"]
    emit({**row, **_machine()})


def _train_config(env_name: str, variant: str, chunk_size: int, num_prompts: int = 0,
                  dtype: str = "", image_size: int = 0, camera: str = "", mesh: str = ""):
  import jax
  from configs.default import get_config
  from vla_rl_jax import config as config_lib
  c = get_config(f"variant={variant},env={env_name}")
  if chunk_size:
    c.policy.chunk_size = chunk_size
    c.env.episode_length = -(-c.env.episode_length // chunk_size) * chunk_size
  if image_size:
    c.env.image_size = image_size
  if camera:
    c.env.camera = camera
  if mesh:
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = _mesh(mesh)
  if num_prompts:
    c.rl.num_prompts = num_prompts
    c.rl.minibatch_size = min(c.rl.minibatch_size, num_prompts * c.rl.group_size)
  if dtype:
    c.model.dtype = dtype
  return config_lib.resolve(c, jax.device_count())


def _step_row(rc, times: list[float], metrics: list[dict]) -> dict:
  """Throughput of a train step from each repeat's seconds and metrics: trajectories/s, and env
  control steps/s and policy calls/s from each repeat's own work (episodes shorten as the policy
  learns, and the rollout stops when all have ended)."""
  n_roll = rc.num_rollout_trajectories  # oversampling rolls out more than the update keeps
  row = {**_spread("step_s", times, rate=False), **_spread("trajectories_per_s", times, n_roll)}
  for name, key in (("env_steps_per_s", "episode_length"), ("policy_calls_per_s", "policy_calls")):
    r = sorted(n_roll * float(m[key]) / t for m, t in zip(metrics, times))
    row.update({name: r[len(r) // 2], f"{name}_min": r[0], f"{name}_max": r[-1]})
  return row


def _mesh(text: str) -> tuple[int, int, int]:
  parts = text.split(",")
  if len(parts) != 3 or not all(p.strip().lstrip("-").isdigit() for p in parts):
    raise ValueError(f"mesh {text!r}: give 'data,fsdp,tensor', e.g. '1,8,1' or '-1,1,1'")
  return tuple(int(p) for p in parts)


def train_settings(cfg) -> list[dict]:
  """Every combination of the train_* sweeps (one dict of _train_config's keyword arguments each)."""
  import itertools
  axes = {"variant": tuple(cfg.train_variants) or (cfg.train_variant,),
          "num_prompts": tuple(cfg.train_prompts) or (cfg.train_num_prompts,),
          "chunk_size": tuple(cfg.train_chunk_sizes) or (cfg.train_chunk_size,),
          "image_size": tuple(cfg.train_image_sizes) or (0,),
          "camera": tuple(cfg.train_cameras) or ("",),
          "mesh": tuple(cfg.train_meshes) or ("",)}
  return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def bench_train(cfg) -> None:
  from envs import registry
  for env_name in cfg.train_envs:
    if env_name not in registry.names():
      emit({"bench": "train", "env": env_name, "error": "env not registered"})
      continue
    for setting in train_settings(cfg):
      _bench_train_one(cfg, env_name, setting)


def _bench_train_one(cfg, env_name: str, setting: dict) -> None:
  """One row: the fused train step of one sweep setting, compiled, warmed up and timed."""
  import jax
  from vla_rl_jax import flops
  from vla_rl_jax.builders import build
  from vla_rl_jax.rollout import resolve_store, stored_bytes_per_call
  from vla_rl_jax.train_step import make_train_step
  from vla_rl_jax.trainer import check_fits

  rc = _train_config(env_name, dtype=cfg.train_dtype, **setting)
  print(f"train step on {env_name} ({setting}) ...", file=sys.stderr, flush=True)
  b = build(rc)
  state, stats = b.init_fn()
  t = time.perf_counter()
  step = make_train_step(b).lower(state, stats).compile()
  compile_s = time.perf_counter() - t
  check_fits(step, "train step")
  # progress on stderr: a run cut by a time limit still says how far it got
  print(f"  compiled in {compile_s:.1f} s", file=sys.stderr, flush=True)
  t = time.perf_counter()
  state, stats, m = step(state, stats)  # warm-up
  jax.block_until_ready(m)
  print(f"  warm-up step {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
  times, ms = [], []
  for _ in range(cfg.train_repeats):
    t = time.perf_counter()
    state, stats, m = step(state, stats)
    ms.append(jax.device_get(m))
    times.append(time.perf_counter() - t)
    print(f"  step {times[-1]:.1f} s", file=sys.stderr, flush=True)
  row = _step_row(rc, times, ms)
  row.update(flops.step_fields(b, state, times, ms))
  num_tokens = b.policy.num_tokens
  emit({"bench": "train", "env": env_name, "variant": rc.variant, "dtype": rc.model.dtype,
        "camera": rc.env.camera, "num_prompts": rc.rl.num_prompts, "group_size": rc.rl.group_size,
        "mesh": {"data": rc.mesh.data, "fsdp": rc.mesh.fsdp, "tensor": rc.mesh.tensor},
        "num_devices": jax.device_count(),
        "trajectories_per_step": rc.num_rollout_trajectories,
        "trajectories_kept": rc.num_trajectories,
        "episode_length": rc.env.episode_length, "chunk_size": rc.policy.chunk_size,
        "image_size": rc.env.image_size, "rollout_store": resolve_store(b.env, rc.rollout.store),
        "stored_bytes_per_call": stored_bytes_per_call(b.env, b.policy, rc.rollout.store),
        "compile_s": compile_s, "median_step_s": row["step_s"], **row,
        **{k.replace("policy_calls", "action_tokens"): v * num_tokens
           for k, v in row.items() if k.startswith("policy_calls_per_s")},
        **_peak_memory_mb(), **_machine()})


def bench_fused_vs_unfused(cfg) -> None:
  """The fused train step against the unfused baseline of the same algorithm (vla_rl_jax/unfused.py),
  same config and initial parameters, timed alternately in one process: each repeat runs one fused
  and one unfused step, each from its own copy of the run (both runs take the same steps)."""
  import jax
  from vla_rl_jax.builders import build
  from vla_rl_jax.train_step import make_train_step
  from vla_rl_jax.trainer import check_fits
  from vla_rl_jax.unfused import UnfusedStep

  for env_name in cfg.ratio_envs:
    rc = _train_config(env_name, cfg.ratio_variant, cfg.train_chunk_size, cfg.ratio_num_prompts,
                       cfg.train_dtype)
    print(f"fused vs unfused on {env_name} ({cfg.ratio_variant}) ...", file=sys.stderr, flush=True)
    b = build(rc)
    state_f, stats_f = b.init_fn()
    state_u, stats_u = b.init_fn()
    t = time.perf_counter()
    fused = make_train_step(b).lower(state_f, stats_f).compile()
    fused_compile_s = time.perf_counter() - t
    check_fits(fused, "fused train step")
    print(f"  fused step compiled in {fused_compile_s:.1f} s", file=sys.stderr, flush=True)
    unfused = UnfusedStep(b)
    t = time.perf_counter()  # the unfused pieces compile on first use: warm-up step, all included
    state_u, stats_u, _ = unfused(state_u, stats_u)
    jax.block_until_ready(state_u.params)
    unfused_first_s = time.perf_counter() - t
    print(f"  unfused first step (its compiles included) {unfused_first_s:.1f} s", file=sys.stderr,
          flush=True)
    state_f, stats_f, m = fused(state_f, stats_f)  # warm-up, as the unfused one had
    jax.block_until_ready(m)
    tf, tu, mf, mu = [], [], [], []
    for _ in range(cfg.ratio_repeats):
      t = time.perf_counter()
      state_f, stats_f, m = fused(state_f, stats_f)
      mf.append(jax.device_get(m))
      tf.append(time.perf_counter() - t)
      t = time.perf_counter()
      state_u, stats_u, m = unfused(state_u, stats_u)
      jax.block_until_ready(state_u.params)
      mu.append(m)
      tu.append(time.perf_counter() - t)
    rf, ru = _step_row(rc, tf, mf), _step_row(rc, tu, mu)
    ratios = sorted(u / f for u, f in zip(tu, tf))  # per repeat, side by side
    emit({"bench": "fused_vs_unfused", "env": env_name, "variant": rc.variant, "dtype": rc.model.dtype,
          "trajectories_per_step": rc.num_rollout_trajectories,
          "episode_length": rc.env.episode_length, "chunk_size": rc.policy.chunk_size,
          "image_size": rc.env.image_size, "repeats": cfg.ratio_repeats,
          "fused_compile_s": fused_compile_s, "unfused_first_step_s": unfused_first_s,
          **{f"fused_{k}": v for k, v in rf.items()}, **{f"unfused_{k}": v for k, v in ru.items()},
          "fused_mean_episode_length": sum(float(m["episode_length"]) for m in mf) / len(mf),
          "unfused_mean_episode_length": sum(float(m["episode_length"]) for m in mu) / len(mu),
          "fused_unfused_ratio": ru["step_s"] / rf["step_s"],
          "fused_unfused_ratio_min": ratios[0], "fused_unfused_ratio_max": ratios[-1],
          **_peak_memory_mb(), **_machine()})


def check(cfg) -> None:
  """Every setting a run will use, checked before anything is compiled: one line per problem."""
  from configs.default import VARIANTS
  from envs import registry
  names = registry.names()
  envs = {"env": (cfg.env,), "train_envs": tuple(cfg.train_envs), "ratio_envs": tuple(cfg.ratio_envs),
          "suites": tuple(cfg.suites), "suite_single": (cfg.suite_single,)}
  for field, values in envs.items():
    for v in values:
      if v not in names:
        fail(PROG, f"--config.{field}: {v!r} is not a registered env; registered: {list(names)}")
  if not cfg.num_envs or any(not isinstance(b, int) or b < 1 for b in cfg.num_envs):
    fail(PROG, f"--config.num_envs={tuple(cfg.num_envs)}: give batch sizes >= 1, e.g. '(64,256)'")
  if any(not isinstance(v, int) or v < 8 for v in cfg.image_sizes):
    fail(PROG, f"--config.image_sizes={tuple(cfg.image_sizes)}: give sizes >= 8, e.g. '(64,128)'")
  for field in ("image_size", "control_steps", "repeats", "train_repeats", "ratio_repeats",
                "suite_num_envs"):
    if getattr(cfg, field) < 1:
      fail(PROG, f"--config.{field}={getattr(cfg, field)}: must be >= 1")
  if cfg.suite_own_task >= 10:
    fail(PROG, f"--config.suite_own_task={cfg.suite_own_task}: give a task id 0-9 (each suite has "
               "ten tasks), or -1 to run only the mixed batches")
  for field in ("train_chunk_size", "train_num_prompts", "ratio_num_prompts"):
    if getattr(cfg, field) < 0:
      fail(PROG, f"--config.{field}={getattr(cfg, field)}: must be >= 0 (0: the config's)")
  for field in ("train_variant", "ratio_variant"):
    if getattr(cfg, field) not in VARIANTS:
      fail(PROG, f"--config.{field}={getattr(cfg, field)!r}: choose one of {list(VARIANTS)}")
  for v in cfg.train_variants:
    if v not in VARIANTS:
      fail(PROG, f"--config.train_variants: {v!r} is not a variant; choose from {list(VARIANTS)}")
  for field, low in (("train_prompts", 1), ("train_chunk_sizes", 1), ("train_image_sizes", 8)):
    if any(not isinstance(v, int) or v < low for v in getattr(cfg, field)):
      fail(PROG, f"--config.{field}={tuple(getattr(cfg, field))}: give ints >= {low}, e.g. '(4,8)'")
  for cam in cfg.train_cameras:
    if not isinstance(cam, str) or not cam.strip():
      fail(PROG, f"--config.train_cameras={tuple(cfg.train_cameras)}: give camera specs, e.g. "
                 f"\"('agentview','agentview,wrist')\"")
  for m in cfg.train_meshes:
    try:
      _mesh(m)
    except (ValueError, AttributeError):
      fail(PROG, f"--config.train_meshes={tuple(cfg.train_meshes)}: give 'data,fsdp,tensor' "
                 f"strings, e.g. \"('8,1,1','1,8,1','1,4,2')\"")
  if cfg.train_dtype not in ("", "float32", "bfloat16"):
    fail(PROG, f"--config.train_dtype={cfg.train_dtype!r}: choose '', 'float32' or 'bfloat16'")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  cfg = loaded_config(PROG, _CONFIG)
  check(cfg)
  import jax
  if not cfg.compilation_cache:  # compile times must be real, not cache hits (Makefile sets a dir)
    jax.config.update("jax_enable_compilation_cache", False)
  if cfg.what in ("render", "all"):
    bench_render(cfg)
  if cfg.what in ("env", "all"):
    bench_env(cfg)
  if cfg.what in ("train", "all"):
    bench_train(cfg)
  if cfg.what in ("suites", "all"):
    bench_suites(cfg)
  if cfg.what in ("fused_vs_unfused", "all"):
    bench_fused_vs_unfused(cfg)


def _main(argv):
  from vla_rl_jax.config import ConfigError
  try:
    main(argv)
  except ConfigError as e:  # a train or ratio setting the run config rejects
    if _DEBUG.value:
      raise
    fail(PROG, str(e))


if __name__ == "__main__":
  app.run(_main, flags_parser=parse_flags(PROG))
