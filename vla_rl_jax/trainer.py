"""train_and_evaluate(config, workdir): build, compile, loop, log, checkpoint, evaluate.

The ONLY module with side effects. It defines no math: everything it runs comes from the pure
factories (builders, train_step, evaluation). Restarted on the same workdir it resumes from the
latest complete checkpoint and continues with exactly the steps an uninterrupted run would take.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import sys
import threading
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vla_rl_jax import checkpoint as ckpt_lib
from vla_rl_jax import config as config_lib
from vla_rl_jax import media
from vla_rl_jax import metrics as metrics_lib
from vla_rl_jax import sharding
from vla_rl_jax.builders import Built, build
from vla_rl_jax.evaluation import make_eval_fn
from vla_rl_jax.train_step import make_train_step


def maybe_initialize_distributed(raw: Mapping[str, Any]) -> None:
  """Calls jax.distributed.initialize() when more than one process is configured (pods, clusters).

  Must run before any other JAX call. On TPU pods and SLURM/GKE clusters the arguments come from the
  environment; explicit coordinator/process id (config.distributed) serve single-machine tests.
  Says what it does: the coordinator address and the wait, a line every few seconds while peers
  are missing (jax reports no partial count, so the elapsed time is what it can say), and, when
  not all processes joined within config.distributed.initialization_timeout, one clear line and
  exit status 1 (jax itself would abort the process from C++ a little later). Process 0's
  coordinator service binds to the coordinator address (one interface), not to all interfaces,
  unless distributed.coordinator_bind_address says otherwise.
  """
  d = raw["distributed"]
  n = d["num_processes"]
  if n <= 1 or jax.distributed.is_initialized():
    return
  timeout = int(d.get("initialization_timeout", 300))
  kwargs: dict[str, Any] = {"num_processes": n}
  addr = d["coordinator_address"]
  if addr:
    kwargs["coordinator_address"] = addr
    kwargs["coordinator_bind_address"] = d.get("coordinator_bind_address") or addr
  if d["process_id"] >= 0:
    kwargs["process_id"] = d["process_id"]
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  where = addr or "the address from the cluster environment"
  me = f"process {d['process_id']}" if d["process_id"] >= 0 else "this process"
  print(f"distributed: {me} of {n} joining the coordinator at {where}"
        + (f" (listening on {kwargs['coordinator_bind_address']})" if d["process_id"] == 0 else "")
        + f"; waiting up to {timeout} s for all {n} processes", flush=True)
  joined = threading.Event()
  t0 = time.time()

  def watchdog():
    every = min(30.0, max(1.0, timeout / 5))
    while not joined.wait(every):
      waited = time.time() - t0
      if waited >= timeout:
        print(f"launch.train: not all {n} processes joined the coordinator at {where} within "
              f"{timeout} s (config.distributed.initialization_timeout). Start the same command "
              f"on every host with distinct process ids 0..{n - 1} and check that the "
              f"coordinator address is reachable from each of them (host name, port, firewall).",
              file=sys.stderr, flush=True)
        os._exit(1)  # jax's own timeout aborts from C++ with a stack dump; say it clearly first
      print(f"distributed: still waiting for all {n} processes at {where} "
            f"({waited:.0f} s of {timeout} s)", flush=True)

  threading.Thread(target=watchdog, daemon=True, name="distributed-watchdog").start()
  try:
    # jax's deadline is later than ours, so the watchdog's message is what the user sees
    jax.distributed.initialize(initialization_timeout=timeout + 60, **kwargs)
  finally:
    joined.set()
  print(f"distributed: all {n} processes joined in {time.time() - t0:.1f} s "
        f"(this is process {jax.process_index()})", flush=True)


KEEP_ROWS = 1000  # train rows (and step times) a run's summary holds
NO_SIGNAL_STEPS = 5  # consecutive steps without an informative group before a warning


def memory_mb() -> dict[str, float]:
  """Host resident memory of this process and device memory in use (first local device; where the
  backend keeps no statistics, as on CPU, the bytes of all live JAX arrays of this process)."""
  out = {}
  try:
    with open("/proc/self/statm") as f:
      out["host_rss_mb"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
  except (OSError, ValueError, IndexError):
    pass
  stats = jax.local_devices()[0].memory_stats()
  if stats and "bytes_in_use" in stats:
    out["device_mem_mb"] = stats["bytes_in_use"] / 2**20
  else:
    out["device_mem_mb"] = sum(a.nbytes for a in jax.live_arrays()) / 2**20
  return out


def memory_figures(compiled) -> dict:
  """Per-device bytes of a compiled program (XLA's memory_analysis), with their total (arguments +
  outputs + temporaries - what outputs alias: donated state) and GB; {} where the backend has none."""
  m = compiled.memory_analysis()
  if m is None:
    return {}
  out = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
         for k in ("argument", "output", "temp", "alias", "generated_code")}
  out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
  return {**{f"{k}_bytes": v for k, v in out.items()}, "total_gb": out["total"] / 1e9}


def check_fits(compiled, what: str, device=None) -> None:
  """Refuses, before it runs, a compiled program whose buffers (arguments, outputs not aliased to
  them, temporaries; XLA's memory_analysis) exceed the device's memory, with what to change --
  instead of RESOURCE_EXHAUSTED from inside the first step. Backends without a memory limit (the
  CPU) pass."""
  device = device or jax.local_devices()[0]
  stats = device.memory_stats() or {}
  limit = stats.get("bytes_limit")
  m = memory_figures(compiled)
  if not limit or not m:
    return
  need = m["total_bytes"]
  if need > limit:
    def size(n):
      return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
    raise config_lib.ConfigError(
        f"the compiled {what} needs {size(need)} on {device} ({size(m['temp_bytes'])} of it "
        f"temporaries), more than its {size(limit)}: set "
        "--config.rl.remat_calls=True (each policy call's activations recomputed in the backward "
        "pass), or --config.rl.grad_accum=per_call (one call of one micro-batch at a time), or "
        "lower --config.rl.minibatch_size, or add devices")


def train_and_evaluate(config: Any, workdir: str, *, quiet: bool = False) -> dict[str, Any]:
  """Runs (or resumes) training; returns a summary with the eval history and timings.

  Holds workdir/LOCK for the whole run (process 0; a second trainer on the workdir is refused).
  """
  cfg = _resolve(config)
  return _locked(workdir, quiet, lambda verbose: _train(cfg, workdir, verbose))


def _resolve(config: Any) -> config_lib.Config:
  """A ConfigDict, dict or Config -> the validated Config, after jax.distributed (multi-process)."""
  raw = config.to_dict() if hasattr(config, "to_dict") else (
      config_lib.to_dict(config) if isinstance(config, config_lib.Config) else dict(config))
  maybe_initialize_distributed(raw)
  return config_lib.resolve(raw, jax.device_count())


def _locked(workdir: str, quiet: bool, run):
  """run(verbose) holding workdir/LOCK (process 0 takes it; only it prints unless quiet)."""
  lead = jax.process_index() == 0
  lock = ckpt_lib.WorkdirLock(workdir)
  if lead:
    lock.acquire(warn=lambda text: print(f"warning: {text}", file=sys.stderr, flush=True))
  try:
    return run(lead and not quiet)
  finally:
    lock.release()


def _printers(verbose: bool):
  """(log, warn): stdout and stderr lines, or nothing when not verbose."""
  if not verbose:
    return (lambda text: None), (lambda text: None)
  return ((lambda text: print(text, flush=True)),
          (lambda text: print(f"warning: {text}", file=sys.stderr, flush=True)))


def _train(cfg: config_lib.Config, workdir: str, verbose: bool) -> dict[str, Any]:
  log, warn = _printers(verbose)
  log(f"devices: {jax.device_count()} ({jax.devices()[0].platform}) over "
      f"{jax.process_count()} process(es); mesh data={cfg.mesh.data} fsdp={cfg.mesh.fsdp} "
      f"tensor={cfg.mesh.tensor}")

  b = build(cfg)
  for f in b.replicated_params:
    log(f"replicated (its mesh axis does not divide it): {f.describe()}")
  ckpt = ckpt_lib.Checkpointer(workdir, cfg.train.keep_checkpoints)
  try:
    start, state, stats = start_state(cfg, b, ckpt, workdir, log, warn)
  except BaseException:
    ckpt.close()
    raise
  ckpt_lib.write_config(workdir, cfg)
  writer = metrics_lib.Writer(workdir, cfg.train.num_steps, enabled=verbose, start_step=start)
  writer.text("config", "```json\n" + config_lib.dumps(cfg) + "\n```", start)
  try:
    return _loop(cfg, b, ckpt, writer, state, stats, start, log, warn)
  finally:
    ckpt.close()
    writer.close()


def _restore_own(cfg: config_lib.Config, b: Built, ckpt: ckpt_lib.Checkpointer, workdir: str,
                 log, warn, steps_field: str = "train.num_steps"):
  """(step, state, env_stats) of the workdir's own newest checkpoint that verifies, after checking
  that its saved config may be resumed with cfg; None when the workdir holds no checkpoint.
  steps_field: the config field with the run's number of steps (a restored step beyond it fails)."""
  if not ckpt.all_steps():
    return None
  saved = ckpt_lib.read_config_json(workdir) or {}
  conflicts = config_lib.resume_conflicts(saved, cfg)
  if conflicts:
    raise config_lib.ConfigError(
        f"workdir {workdir} holds a run with a different config in {conflicts}; use a new "
        f"--workdir or the same config (only {list(config_lib.RESUMABLE_SECTIONS)} and "
        f"{list(config_lib.RESUMABLE_OPTIM)} may change on resume)")
  for change in config_lib.resume_changes(saved, cfg):
    log(f"resuming with a changed {change}")
  restored = ckpt.restore_latest(*b.abstract_state, b.state_shardings, b.env_stats_shardings,
                                 warn=warn)
  num_steps = getattr(getattr(cfg, steps_field.split(".")[0]), steps_field.split(".")[1])
  for path in ckpt.set_aside_rejected():
    warn(f"moved the rejected checkpoint to {path}")
  if restored is not None and restored[0] > num_steps:
    raise config_lib.ConfigError(
        f"config.{steps_field}={num_steps} is below the step {restored[0]} restored from "
        f"{ckpt.directory}: the run is already past it; give --config.{steps_field} >= "
        f"{restored[0]} (or a new --workdir)")
  return restored


def start_state(cfg: config_lib.Config, b: Built, ckpt: ckpt_lib.Checkpointer, workdir: str,
                log=lambda text: None, warn=lambda text: None):
  """(step, TrainState, EnvStats) a run starts from: the workdir's own newest verified checkpoint
  (resuming; train.init_from is then ignored: the run's own checkpoint wins), else a fresh state
  whose parameters come from train.init_from's checkpoint when it is set (init_params), else the
  random initialisation."""
  restored = _restore_own(cfg, b, ckpt, workdir, log, warn)
  if restored is not None:
    log(f"resumed from step {restored[0]}" + (
        f" (its own checkpoint: config.train.init_from={cfg.train.init_from} is not read again)"
        if cfg.train.init_from else ""))
    return restored
  state, stats = b.init_fn()
  if cfg.train.init_from:
    step, params = init_params(cfg, b, warn)
    log(f"parameters from {cfg.train.init_from} (its step {step}); the optimiser starts fresh"
        + ("; the KL reference is these parameters" if state.ref_params is not None else ""))
    state = state.replace(params=params)
    if state.ref_params is not None:
      copy = jax.jit(lambda p: jax.tree_util.tree_map(jnp.copy, p),
                     out_shardings=b.state_shardings.ref_params)
      state = state.replace(ref_params=copy(params))   # its own buffers: the step donates both
  return 0, state, stats


def init_params(cfg: config_lib.Config, b: Built, warn=lambda text: None):
  """(step, params) of the checkpoint cfg.train.init_from names (its train.init_step, or its newest
  one that verifies), restored verified into this run's parameter shardings. ConfigError (one
  line, naming the field) when that run's model differs from cfg's (config.INIT_FIELDS, then the
  parameter shapes, which the envs' action and proprio sizes also set) or it holds no checkpoint;
  CheckpointError when its checkpoint does not verify."""
  src = cfg.train.init_from
  where = f"config.train.init_from={src}"
  saved = ckpt_lib.read_config_json(src) if os.path.isdir(src) else None
  if saved is None:
    raise config_lib.ConfigError(f"{where}: no {ckpt_lib.CONFIG_FILE} there: not the workdir of a "
                                 f"training or SFT run")
  bad = config_lib.init_conflicts(saved, cfg)
  if bad:
    field, old, new = bad[0]
    more = f" (also: {', '.join(f for f, _, _ in bad[1:])})" if len(bad) > 1 else ""
    raise config_lib.ConfigError(
        f"{where}: that run has {field}={old!r}, this config {field}={new!r}{more}; the run starts "
        f"from its parameters, so the model must be the same (set --config.{field}={old!r})")
  try:
    src_cfg = config_lib.loads(json.dumps(saved), jax.device_count(), fresh_topology=True)
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f"{where}: its {ckpt_lib.CONFIG_FILE} does not load: {e}") from None
  sb = build(dataclasses.replace(src_cfg, mesh=cfg.mesh))   # this run's mesh: its shardings
  shapes = lambda t: {jax.tree_util.keystr(p): list(x.shape)  # noqa: E731
                      for p, x in jax.tree_util.tree_flatten_with_path(t)[0]}
  here, there = shapes(b.abstract_state[0].params), shapes(sb.abstract_state[0].params)
  for name in sorted(set(here) | set(there)):
    if here.get(name) != there.get(name):
      raise config_lib.ConfigError(
          f"{where}: parameter {name} is {there.get(name, 'absent')} there, "
          f"{here.get(name, 'absent')} here: the models differ (env {src_cfg.env.name!r} there, "
          f"{cfg.env.name!r} here: their action and proprio sizes must match)")
  ckpt = ckpt_lib.Checkpointer(src, src_cfg.train.keep_checkpoints)
  try:
    step = None if cfg.train.init_step < 0 else cfg.train.init_step
    found = ckpt.restore_for_inference(step, *sb.abstract_state, sb.state_shardings,
                                       sb.env_stats_shardings, warn=warn)
  finally:
    ckpt.close()
  if found is None:
    raise config_lib.ConfigError(f"{where}: no complete checkpoint under {ckpt.directory}")
  step, state, _ = found
  return step, jax.device_put(state.params, b.state_shardings.params)


def _compile_key(cfg: config_lib.Config) -> str:
  """What a train step's compile time depends on: the config but its schedule and topology
  sections, the devices, jax's version."""
  d = json.loads(config_lib.dumps(cfg))
  for k in config_lib.RESUMABLE_SECTIONS:
    d.pop(k, None)
  d["_devices"] = [jax.device_count(), jax.devices()[0].platform, jax.__version__]
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _compile_times_path() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "vla_rl_jax", "compile_times.json")


def _compile_times() -> dict[str, float]:
  try:
    with open(_compile_times_path()) as f:
      return dict(json.load(f))
  except (OSError, ValueError, TypeError):
    return {}


def _remember_compile_time(key: str, seconds: float) -> None:
  """Best effort (a read-only home is fine): the next run of this config says how long to wait."""
  times = _compile_times()
  times[key] = round(seconds, 1)
  path = _compile_times_path()
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
      json.dump(dict(list(times.items())[-200:]), f)
    os.replace(tmp, path)
  except OSError:
    pass


def _loop(cfg, b, ckpt, writer, state, stats, start, log, warn) -> dict[str, Any]:
  key = _compile_key(cfg)
  before = _compile_times().get(key)
  log("compiling the train step" + (f" (about {before:.0f} s on this machine)" if before else "")
      + "...")
  t0 = time.time()
  train_step = make_train_step(b).lower(state, stats).compile()
  compile_s = time.time() - t0
  check_fits(train_step, "train step")
  _remember_compile_time(key, compile_s)
  eval_fn = make_eval_fn(b, with_frames=True)
  t0 = time.time()
  eval_fn = eval_fn.lower(state.params).compile()
  eval_compile_s = time.time() - t0
  log(f"compiled train step in {compile_s:.1f} s, eval in {eval_compile_s:.1f} s")

  history: list[dict[str, Any]] = []

  def evaluate(step: int) -> dict[str, Any]:
    out = eval_fn(state.params)
    # the first held-out episode as the policy saw it: a picture in TensorBoard
    ep = jax.tree_util.tree_map(lambda v: np.asarray(v.addressable_data(0)), out.pop("rollout"))
    m = metrics_lib.to_host(out)
    m["task_success"] = dict(zip(b.env.instructions, m["task_success"]))  # named, not a list
    writer.image("eval/rollout", media.rollout_strip(
        ep["frames"], ep["length"], cfg.policy.chunk_size, b.env.instructions[int(ep["task_id"])],
        bool(ep["success"])), step)
    metrics_lib.check_render(m, step, "evaluation at step")
    history.append({"step": step, **m})
    writer.write(step, m, prefix="eval")
    log(f"eval @ step {step}: success {m['success_rate']:.3f} on "
        f"{cfg.train.eval_num_states} held-out states (greedy)")
    return m

  step = start
  # an uninterrupted run evaluated here (a multiple of eval_every, or the end of an earlier run's
  # schedule, whose row the writer dropped to write it again)
  if step == 0 or step % cfg.train.eval_every == 0 or writer.dropped_eval_at_start:
    evaluate(step)
  # the summary keeps the last KEEP_ROWS train rows (metrics.jsonl has all of them): a long run's
  # host memory must not grow with its length
  step_times, train_rows = [], collections.deque(maxlen=KEEP_ROWS)
  no_signal = 0
  while step < cfg.train.num_steps:
    t = time.time()
    state, stats, m = train_step(state, stats)
    m = metrics_lib.to_host(m)  # blocks: the step is finished
    dt = time.time() - t
    step += 1
    if len(step_times) < KEEP_ROWS:
      step_times.append(dt)
    # per-task success (moving average) by instruction, for multi-task suites
    m["task_success_ema"] = dict(zip(b.env.instructions,
                                     metrics_lib.to_host({"t": stats.task_success})["t"]))
    m.update(step_time_s=dt, trajectories_per_s=cfg.num_trajectories / dt,
             env_steps_per_s=cfg.num_trajectories * m["episode_length"] / dt)
    logged = step % cfg.train.log_every == 0 or step == cfg.train.num_steps
    if logged:
      m.update(memory_mb())
    try:
      metrics_lib.check_finite(m, step, ckpt.latest_step())
      metrics_lib.check_render(m, step)
    except (metrics_lib.NonFiniteError, metrics_lib.RenderOverflowError):
      writer.write(step, m)  # the failing step's row, for the post-mortem (nothing is saved)
      raise
    train_rows.append({"step": step, **m})
    # dynamic sampling keeps only groups with both outcomes; a run where none has them learns
    # nothing, and says so once it has gone on for a while (then every NO_SIGNAL_STEPS steps)
    no_signal = no_signal + 1 if m.get("valid_group_frac", 1.0) == 0 else 0
    if no_signal and no_signal % NO_SIGNAL_STEPS == 0:
      warn(f"no informative groups in the last {no_signal} steps (to step {step}): every rollout "
           f"of each group failed or every one succeeded, so there is nothing to learn from; "
           f"check the horizon (config.env.episode_length) or start from an SFT checkpoint")
    if logged:
      writer.write(step, m)
      writer.progress(step, m)
    if step % cfg.train.checkpoint_every == 0 or step == cfg.train.num_steps:
      ckpt.save(step, state, stats)
    if step % cfg.train.eval_every == 0 or step == cfg.train.num_steps:
      if not history or history[-1]["step"] != step:
        evaluate(step)
  steady = sorted(step_times[1:] or step_times)
  return {"compile_s": compile_s, "eval_compile_s": eval_compile_s,
          "median_step_s": steady[len(steady) // 2] if steady else float("nan"),
          "eval": history, "train": list(train_rows), "final_state": state, "final_env_stats": stats}


def train_sft(config: Any, workdir: str, *, quiet: bool = False) -> dict[str, Any]:
  """Runs (or resumes) behaviour cloning on config.sft.demos (vla_rl_jax.sft); returns a summary
  with the logged rows and timings. Checkpoints as the RL trainer does (workdir/checkpoints, the
  config the state was built with as workdir/config.json), so `launch.eval --workdir` evaluates
  them and `train.init_from` starts RL from them. Holds workdir/LOCK for the whole run.
  Raises demos.DemoError (one line) when the demonstrations do not fit the config."""
  from vla_rl_jax import sft  # noqa: PLC0415
  cfg = sft.state_config(_resolve(config))
  sft.check_manifest(cfg, cfg.sft.demos)   # before the lock and the build: a bad input says so
  return _locked(workdir, quiet, lambda verbose: _sft(cfg, workdir, verbose))


def _sft(cfg: config_lib.Config, workdir: str, verbose: bool) -> dict[str, Any]:
  from vla_rl_jax import sft  # noqa: PLC0415
  log, warn = _printers(verbose)
  b = build(cfg)
  data = sft.load_dataset(cfg, b.env, cfg.sft.demos)
  log(f"sft: {data.num_examples} examples from {cfg.sft.demos} ({data.nbytes / 2**20:.1f} MB on "
      f"every device); {jax.device_count()} device(s), batch {cfg.sft.batch_size}")
  ckpt = ckpt_lib.Checkpointer(workdir, cfg.train.keep_checkpoints)
  try:
    restored = _restore_own(cfg, b, ckpt, workdir, log, warn, steps_field="sft.num_steps")
  except BaseException:
    ckpt.close()
    raise
  start, (state, stats) = (restored[0], restored[1:]) if restored else (0, b.init_fn())
  if restored:
    log(f"resumed from step {start}")
  elif cfg.train.init_from:
    # a fresh SFT run from another run's parameters (launch.pretrain's): the same checks as RL's
    init_step, params = init_params(cfg, b, warn)
    log(f"parameters from {cfg.train.init_from} (its step {init_step}); the optimiser starts fresh")
    state = state.replace(params=params)
  ckpt_lib.write_config(workdir, cfg)
  total = cfg.sft.num_steps
  writer = metrics_lib.Writer(workdir, total, enabled=verbose, start_step=start)
  writer.text("config", "```json\n" + config_lib.dumps(cfg) + "\n```", start)
  try:
    data = jax.device_put(data, sharding.replicated(b.mesh))
    t0 = time.time()
    step_fn = sft.make_sft_step(b, cfg.sft.batch_size).lower(state, data).compile()
    compile_s = time.time() - t0
    log(f"compiled the SFT step in {compile_s:.1f} s")
    rows, times, step = collections.deque(maxlen=KEEP_ROWS), [], start
    while step < total:
      t = time.time()
      state, m = step_fn(state, data)
      m = metrics_lib.to_host(m)   # blocks: the step is finished
      dt = time.time() - t
      step += 1
      if len(times) < KEEP_ROWS:
        times.append(dt)
      m["step_time_s"] = dt
      try:
        metrics_lib.check_finite(m, step, ckpt.latest_step())
      except metrics_lib.NonFiniteError:
        writer.write(step, m)
        raise
      rows.append({"step": step, **m})
      if step % cfg.sft.log_every == 0 or step == total:
        writer.write(step, m)
        writer.log(f"sft step {step}/{total} | loss {m['loss']:.4f} | token accuracy "
                   f"{m['token_accuracy']:.3f} | bin error {m['bin_error']:.2f} | {dt:.3f} s/step")
      if step % cfg.sft.checkpoint_every == 0 or step == total:
        ckpt.save(step, state, stats)
  finally:
    ckpt.close()
    writer.close()
  steady = sorted(times[1:] or times)
  return {"compile_s": compile_s, "examples": data.tokens.shape[0],
          "median_step_s": steady[len(steady) // 2] if steady else float("nan"),
          "train": list(rows), "final_state": state}
