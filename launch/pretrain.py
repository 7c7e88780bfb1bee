"""Pretraining: scripted-expert demonstrations of procedural tabletop tasks (none of LIBERO's 40),
behaviour cloning on them, and the result's zero-shot success on LIBERO suites.

  python -m launch.pretrain --workdir=DIR [--num_tasks=16] [--demos_per_task=2] [--variant=tiny]
      [--eval_suite=libero_spatial,libero_object] [--eval_num_states=64] [--config.sft.num_steps=N]

Steps: (1) record `demos_per_task` successful expert episodes of each of `num_tasks` tasks of env
libero_pretrain into DIR/demos (a task whose expert fails `--max_attempts` x per task is dropped,
and the command says which); (2) SFT on them (vla_rl_jax.trainer.train_sft with
configs/pretrain.py), which writes a normal SFT workdir: DIR/checkpoints + DIR/config.json, so
`launch.sft --config.train.init_from=DIR` (one demonstration per task on a suite) and then
`launch.train --config.train.init_from=SFT_DIR` continue the chain; (3) with --eval_suite, the
pretrained parameters greedily on each suite's held-out states (LIBERO's 50 per task, or
--eval_num_states random ones), in a config that is the run's with the env swapped (the model is
the same), written to DIR/zero_shot.json. Re-run on the same DIR it keeps the demonstrations and
resumes SFT.
"""

import json
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from launch.common import check_workdir, fail, loaded_config, parse_flags, run_or_exit
from vla_rl_jax.pretrain import record_demos, zero_shot

PROG = "launch.pretrain"
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "Config file (default configs/pretrain.py); override any field with --config.SECTION.FIELD=V, "
    "e.g. --config.sft.num_steps=200.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Demonstrations, checkpoints, metrics, report.")
_NUM_TASKS = flags.DEFINE_integer("num_tasks", None, "Procedural tasks (default: the config's "
                                  "env.kwargs.num_tasks, 16).")
_TASK_SEED = flags.DEFINE_integer("task_seed", None, "Seed of the task generator (default: the "
                                  "config's env.kwargs.seed, 0).")
_PER_TASK = flags.DEFINE_integer("demos_per_task", 2, "Successful demonstrations per task (1..50).")
_VARIANT = flags.DEFINE_string("variant", None, "Model variant; must match the config's (give "
                               "another one as --config=configs/pretrain.py:variant=small).")
_EVAL = flags.DEFINE_list("eval_suite", [], "Evaluate the pretrained parameters zero-shot on these "
                          "envs (libero_spatial, libero_object, libero_goal, libero_10).")
_EVAL_N = flags.DEFINE_integer("eval_num_states", None, "Random held-out states per suite instead "
                               "of every task x all 50 of its states.")
_SEED = flags.DEFINE_integer("demo_seed", 0, "Seed of the demonstrations' training-stream resets.")
_BATCH = flags.DEFINE_integer("batch", 16, "Expert episodes run together.")
_ATTEMPTS = flags.DEFINE_integer("max_attempts", 4, "Drop a task after this many x per-task tries.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the full traceback of an error instead of one line.")
flags.mark_flags_as_required(["workdir"])


def _check_flags(config) -> None:
  if not 1 <= _PER_TASK.value <= 50:
    fail(PROG, f"--demos_per_task={_PER_TASK.value}: allowed 1..50")
  if _VARIANT.value is not None and _VARIANT.value != config.variant:
    fail(PROG, f"--variant={_VARIANT.value}: the config is variant {config.variant!r}; give the "
               f"variant in the config argument: --config=configs/pretrain.py:variant={_VARIANT.value}")
  for flag, lo, hi in (("batch", 1, 100_000), ("max_attempts", 1, 1000), ("demo_seed", 0, 2000),
                       ("eval_num_states", 1, 100_000)):
    v = flags.FLAGS[flag].value
    if v is not None and not lo <= v <= hi:
      fail(PROG, f"--{flag}={v}: must be in [{lo}, {hi}]")
  from envs import registry  # noqa: PLC0415
  for s in _EVAL.value:
    if s not in registry.names() or not s.startswith("libero"):
      fail(PROG, f"--eval_suite={s}: not a LIBERO env; registered: {list(registry.names())}")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  workdir = _WORKDIR.value
  check_workdir(PROG, workdir)
  config = loaded_config(PROG, _CONFIG)
  _check_flags(config)
  if _NUM_TASKS.value is not None:
    config.env.kwargs.num_tasks = _NUM_TASKS.value
  if _TASK_SEED.value is not None:
    config.env.kwargs.seed = _TASK_SEED.value
  if config.env.name != "libero_pretrain":
    fail(PROG, f"config.env.name={config.env.name!r}: pretraining runs on libero_pretrain")
  demo_dir = os.path.join(workdir, "demos")
  if not config.sft.demos:
    config.sft.demos = demo_dir
  from vla_rl_jax import checkpoint, demos, metrics, trainer  # noqa: PLC0415
  from vla_rl_jax import config as config_lib  # noqa: PLC0415
  from envs import schema  # noqa: PLC0415
  try:
    config_lib.resolve(config)   # before any expert runs: a bad override says so now
  except config_lib.ConfigError as e:
    fail(PROG, str(e))
  t0 = time.time()
  manifest = run_or_exit(PROG, _DEBUG.value, lambda: record_demos(
      config, config.sft.demos, _PER_TASK.value, seed=_SEED.value, batch=_BATCH.value,
      max_attempts=_ATTEMPTS.value, log=lambda t: print(t, flush=True)),
      (demos.DemoError,), (schema.OptionError, ValueError))
  dropped = manifest.get("dropped", [])
  kept = len(manifest["instructions"]) - len(dropped)
  print(f"pretrain: {len(manifest['episodes'])} demonstrations of {kept} tasks "
        f"({time.time() - t0:.0f} s)" + (f"; dropped (expert failed): {dropped}" if dropped else ""),
        flush=True)
  summary = run_or_exit(
      PROG, _DEBUG.value, lambda: trainer.train_sft(config, workdir),
      (checkpoint.CheckpointError, checkpoint.WorkdirLockedError, metrics.NonFiniteError),
      (config_lib.ConfigError, demos.DemoError))
  rows = summary["train"]
  if rows:
    print(f"pretrain: loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}, token accuracy "
          f"{rows[0]['token_accuracy']:.3f} -> {rows[-1]['token_accuracy']:.3f}", flush=True)
  reports = {}
  for suite in _EVAL.value:
    rep = run_or_exit(PROG, _DEBUG.value, lambda s=suite: zero_shot(config, s, workdir,
                                                                    _EVAL_N.value),
                      (checkpoint.CheckpointError,), (config_lib.ConfigError,))
    reports[suite] = rep
    print(f"pretrain: zero-shot {suite}: success {rep['success_rate']:.3f} "
          f"({rep['seconds']:.0f} s)", flush=True)
  if reports:
    with open(os.path.join(workdir, "zero_shot.json"), "w") as f:
      json.dump(reports, f, indent=1, default=float)
  print(f"pretrain: wrote {workdir}; next: python -m launch.sft --config=configs/libero_sft.py:"
        f"suite=libero_spatial,demos_per_task=1,variant={config.variant} --workdir=SFT_DIR "
        f"--config.train.init_from={workdir}")


def with_default_config(argv: list[str]) -> list[str]:
  """argv with --config=configs/pretrain.py added when it names none (a flag default would make
  ml_collections apply the --config.X overrides while the module is imported, with a traceback)."""
  if any(a == "--config" or a.startswith("--config=") for a in argv[1:]):
    return argv
  return argv[:1] + [f"--config={os.path.join(_HERE, 'configs', 'pretrain.py')}"] + argv[1:]


if __name__ == "__main__":
  sys.argv = with_default_config(sys.argv)
  app.run(main, flags_parser=parse_flags(PROG))
