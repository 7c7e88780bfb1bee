"""train_and_evaluate(config, workdir): build, compile, loop, log, checkpoint, evaluate.

The ONLY module with side effects. It defines no math: everything it runs comes from the pure
factories (builders, train_step, evaluation). Restarted on the same workdir it resumes from the
latest complete checkpoint and continues with exactly the steps an uninterrupted run would take.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping

import jax

from vla_rl_jax import checkpoint as ckpt_lib
from vla_rl_jax import config as config_lib
from vla_rl_jax import metrics as metrics_lib
from vla_rl_jax.builders import build
from vla_rl_jax.evaluation import make_eval_fn
from vla_rl_jax.train_step import make_train_step


def maybe_initialize_distributed(raw: Mapping[str, Any]) -> None:
  """Calls jax.distributed.initialize() when more than one process is configured (pods, clusters).

  Must run before any other JAX call. On TPU pods and SLURM/GKE clusters the arguments come from the
  environment; explicit coordinator/process id (config.distributed) serve single-machine tests.
  """
  d = raw["distributed"]
  if d["num_processes"] <= 1 or jax.distributed.is_initialized():
    return
  kwargs: dict[str, Any] = {"num_processes": d["num_processes"]}
  if d["coordinator_address"]:
    kwargs["coordinator_address"] = d["coordinator_address"]
  if d["process_id"] >= 0:
    kwargs["process_id"] = d["process_id"]
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


def train_and_evaluate(config: Any, workdir: str, *, quiet: bool = False) -> dict[str, Any]:
  """Runs (or resumes) training; returns a summary with the eval history and timings."""
  raw = config.to_dict() if hasattr(config, "to_dict") else (
      config_lib.to_dict(config) if isinstance(config, config_lib.Config) else dict(config))
  maybe_initialize_distributed(raw)
  cfg = config_lib.resolve(raw, jax.device_count())
  lead = jax.process_index() == 0
  writer = metrics_lib.Writer(workdir, cfg.train.num_steps, enabled=lead and not quiet)
  writer.log(f"devices: {jax.device_count()} ({jax.devices()[0].platform}) over "
             f"{jax.process_count()} process(es); mesh data={cfg.mesh.data} fsdp={cfg.mesh.fsdp} "
             f"tensor={cfg.mesh.tensor}")

  b = build(cfg)
  for f in b.replicated_params:
    writer.log(f"replicated (its mesh axis does not divide it): {f.describe()}")
  ckpt = ckpt_lib.Checkpointer(workdir, cfg.train.keep_checkpoints)
  latest = ckpt.latest_step()
  if latest is not None:
    conflicts = config_lib.resume_conflicts(ckpt_lib.read_config_json(workdir) or {}, cfg)
    if conflicts:
      raise config_lib.ConfigError(
          f"workdir {workdir} holds a run with a different config in {conflicts}; use a new "
          f"--workdir or the same config (only {list(config_lib.RESUMABLE_SECTIONS)} may change "
          f"on resume)")
    state, stats = ckpt.restore(latest, *b.abstract_state, b.state_shardings,
                                b.env_stats_shardings)
    writer.log(f"resumed from step {latest}")
  else:
    state, stats = b.init_fn()
  ckpt_lib.write_config(workdir, cfg)

  t0 = time.time()
  train_step = make_train_step(b).lower(state, stats).compile()
  compile_s = time.time() - t0
  eval_fn = make_eval_fn(b)
  t0 = time.time()
  eval_fn = eval_fn.lower(state.params).compile()
  eval_compile_s = time.time() - t0
  writer.log(f"compiled train step in {compile_s:.1f} s, eval in {eval_compile_s:.1f} s")

  history: list[dict[str, Any]] = []

  def evaluate(step: int) -> dict[str, Any]:
    m = metrics_lib.to_host(eval_fn(state.params))
    metrics_lib.check_render(m, step, "evaluation at step")
    history.append({"step": step, **m})
    writer.write(step, m, prefix="eval")
    writer.log(f"eval @ step {step}: success {m['success_rate']:.3f} on "
               f"{cfg.train.eval_num_states} held-out states (greedy)")
    return m

  step = int(metrics_lib.to_host({"s": state.step})["s"])
  if step == 0 or step % cfg.train.eval_every == 0:
    evaluate(step)
  step_times, train_rows = [], []
  while step < cfg.train.num_steps:
    t = time.time()
    state, stats, m = train_step(state, stats)
    m = metrics_lib.to_host(m)  # blocks: the step is finished
    dt = time.time() - t
    step += 1
    step_times.append(dt)
    # per-task success (moving average, in env.instructions order) for multi-task suites
    m["task_success_ema"] = metrics_lib.to_host({"t": stats.task_success})["t"]
    m.update(step_time_s=dt, samples_per_s=cfg.num_trajectories / dt,
             env_steps_per_s=cfg.num_trajectories * m["episode_length"] / dt)
    metrics_lib.check_finite(m, step)
    metrics_lib.check_render(m, step)
    train_rows.append({"step": step, **m})
    if step % cfg.train.log_every == 0 or step == cfg.train.num_steps:
      writer.write(step, m)
      writer.progress(step, m)
    if step % cfg.train.checkpoint_every == 0 or step == cfg.train.num_steps:
      ckpt.save(step, state, stats)
    if step % cfg.train.eval_every == 0 or step == cfg.train.num_steps:
      if not history or history[-1]["step"] != step:
        evaluate(step)
  ckpt.close()
  writer.close()
  steady = sorted(step_times[1:] or step_times)
  return {"compile_s": compile_s, "eval_compile_s": eval_compile_s,
          "median_step_s": steady[len(steady) // 2] if steady else float("nan"),
          "eval": history, "train": train_rows, "final_state": state, "final_env_stats": stats}
