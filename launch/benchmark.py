"""Benchmarks: one JSON line per setting on stdout (progress on stderr).

  python -m launch.benchmark --config=configs/benchmark.py:what=env
  python -m launch.benchmark --config=configs/benchmark.py:what=train
  python -m launch.benchmark --config=configs/benchmark.py:what=suites

Honest numbers: compile time reported apart from run time, warm-up excluded, outputs blocked on,
median of repeats; each line records the machine (platform, device kind, device count).
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/benchmark.py", "Benchmark config.")


def _machine() -> dict:
  import jax
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind, "num_devices": jax.device_count(),
          "host": platform.node(), "jax": jax.__version__}


def _peak_memory_mb() -> dict:
  import jax
  out = {"host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
  return out


def _median_time(fn, args, repeats: int) -> float:
  import jax
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return sorted(times)[len(times) // 2]


def emit(row: dict) -> None:
  print(json.dumps(row), flush=True)


def bench_env_setting(env_name: str, num_envs: int, cameras: tuple[str, ...], image_size: int,
                      control_steps: int, repeats: int) -> dict:
  """Control steps/s of `num_envs` envs stepping with random actions, rendering `cameras`."""
  import jax
  import jax.numpy as jnp
  from envs import registry
  from envs.base import image_key

  env = registry.make(env_name, image_size=image_size, cameras=cameras)

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
  dt = _median_time(run_c, (states, jax.random.PRNGKey(2)), repeats)
  cs = num_envs * control_steps / dt
  substeps = int(getattr(env, "substeps", 1))
  return {"control_steps_per_s": cs, "physics_steps_per_s": cs * substeps,
          "frames_per_s": cs * len(cameras), "compile_s": compile_s, "substeps": substeps,
          "seconds_per_call": dt, "reset_compile_s": reset_compile_s}


def bench_env(cfg) -> None:
  for b in cfg.num_envs:
    row = {"bench": "env", "env": cfg.env, "num_envs": b, "image_size": cfg.image_size,
           "control_steps_per_call": cfg.control_steps}
    for label, cams in (("", ()), ("_render", tuple(cfg.cameras[:1])),
                        ("_render_both", tuple(cfg.cameras))):
      print(f"env {cfg.env} B={b} cameras={cams} ...", file=sys.stderr, flush=True)
      try:
        r = bench_env_setting(cfg.env, b, cams, cfg.image_size, cfg.control_steps, cfg.repeats)
      except Exception as e:  # e.g. out of memory at the largest batch: report, keep going
        row[f"error{label}"] = f"{type(e).__name__}: {str(e)[:200]}"
        continue
      row[f"control_steps_per_s{label}"] = r["control_steps_per_s"]
      row[f"compile_s{label}"] = r["compile_s"]
      if not cams:
        row["physics_steps_per_s"] = r["physics_steps_per_s"]
        row["substeps"] = r["substeps"]
      else:
        row[f"frames_per_s{label}"] = r["frames_per_s"]
    if "control_steps_per_s" in row and "control_steps_per_s_render" in row:
      # seconds of rendering per control step vs seconds of physics per control step
      physics = 1.0 / row["control_steps_per_s"]
      render = 1.0 / row["control_steps_per_s_render"] - physics
      row["render_over_physics"] = render / physics
    row.update(_peak_memory_mb(), **_machine())
    emit(row)


def bench_suites(cfg) -> None:
  """Mixed-task batches: each LIBERO suite as one env (all ten tasks in one scene; the batch's
  resets spread over them) stepping `suite_num_envs` envs with random actions and the policy's
  camera, next to the single-task env, in the same run; the step's and the reset's compile time."""
  base = None
  for name in (cfg.suite_single,) + tuple(cfg.suites):
    print(f"suite bench {name} B={cfg.suite_num_envs} ...", file=sys.stderr, flush=True)
    r = bench_env_setting(name, cfg.suite_num_envs, tuple(cfg.cameras[:1]), cfg.image_size,
                          cfg.control_steps, cfg.repeats)
    base = base or r["control_steps_per_s"]
    emit({"bench": "suite", "env": name, "num_envs": cfg.suite_num_envs, "camera": cfg.cameras[0],
          "image_size": cfg.image_size, "control_steps_per_s": r["control_steps_per_s"],
          "relative_to_single_task": r["control_steps_per_s"] / base,
          "step_compile_s": r["compile_s"], "reset_compile_s": r["reset_compile_s"],
          **_peak_memory_mb(), **_machine()})


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


def bench_train(cfg) -> None:
  import jax
  from configs.default import get_config
  from envs import registry
  from vla_rl_jax import config as config_lib
  from vla_rl_jax.builders import build
  from vla_rl_jax.rollout import resolve_store, stored_bytes_per_call
  from vla_rl_jax.train_step import make_train_step

  for env_name in cfg.train_envs:
    if env_name not in registry.names():
      emit({"bench": "train", "env": env_name, "error": "env not registered"})
      continue
    c = get_config(f"variant={cfg.train_variant},env={env_name}")
    if cfg.train_chunk_size:
      c.policy.chunk_size = cfg.train_chunk_size
    rc = config_lib.resolve(c, jax.device_count())
    print(f"train step on {env_name} ({cfg.train_variant}) ...", file=sys.stderr, flush=True)
    b = build(rc)
    state, stats = b.init_fn()
    t = time.perf_counter()
    step = make_train_step(b).lower(state, stats).compile()
    compile_s = time.perf_counter() - t
    state, stats, m = step(state, stats)  # warm-up
    jax.block_until_ready(m)
    times, lengths = [], []
    for _ in range(cfg.train_repeats):
      t = time.perf_counter()
      state, stats, m = step(state, stats)
      m = jax.device_get(m)
      times.append(time.perf_counter() - t)
      lengths.append(float(m["episode_length"]))
    dt = sorted(times)[len(times) // 2]
    n_roll = rc.num_rollout_trajectories  # oversampling rolls out more than the update keeps
    emit({"bench": "train", "env": env_name, "variant": cfg.train_variant,
          "trajectories_per_step": n_roll, "trajectories_kept": rc.num_trajectories,
          "episode_length": rc.env.episode_length, "chunk_size": rc.policy.chunk_size,
          "image_size": rc.env.image_size, "rollout_store": resolve_store(b.env, rc.rollout.store),
          "stored_bytes_per_call": stored_bytes_per_call(b.env, b.policy, rc.rollout.store),
          "compile_s": compile_s, "median_step_s": dt, "trajectories_per_s": n_roll / dt,
          "env_steps_per_s": n_roll * sum(lengths) / len(lengths) / dt,
          **_peak_memory_mb(), **_machine()})


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  cfg = _CONFIG.value
  if cfg.what in ("render", "all"):
    bench_render(cfg)
  if cfg.what in ("env", "all"):
    bench_env(cfg)
  if cfg.what in ("train", "all"):
    bench_train(cfg)
  if cfg.what in ("suites", "all"):
    bench_suites(cfg)


if __name__ == "__main__":
  app.run(main)
