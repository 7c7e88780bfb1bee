"""Behaviour cloning on demonstrations: flags -> ConfigDict -> vla_rl_jax.trainer.train_sft.

  python -m launch.make_demos --suite=libero_spatial --per_task=1 --image_size=32 \
      --out=demos/libero_spatial_1demo
  python -m launch.sft --config=configs/libero_sft.py:suite=libero_spatial,demos_per_task=1 \
      --workdir=/tmp/sft [--config.sft.demos=DIR] [--config.sft.num_steps=2000]

`--config.train.init_from=PRETRAIN_WORKDIR` starts a fresh run from another run's parameters
(launch.pretrain's; the same model checks as RL's). Its checkpoints are what RL starts from (`launch.train ... --config.train.init_from=/tmp/sft`) and
what `launch.eval --workdir=/tmp/sft` evaluates. Restarted on the same workdir it resumes.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from launch.common import check_workdir, fail, loaded_config, parse_flags, run_or_exit

PROG = "launch.sft"
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file and argument, e.g. configs/libero_sft.py:suite=libero_spatial,"
    "demos_per_task=1,variant=tiny; override any field with --config.SECTION.FIELD=VALUE, e.g. "
    "--config.sft.demos=DIR, --config.sft.num_steps=N.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and the resolved config.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the full traceback of an error instead of one line.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file operation at INFO
  workdir = _WORKDIR.value
  check_workdir(PROG, workdir)
  config = loaded_config(PROG, _CONFIG)
  if "sft" not in config:
    fail(PROG, "the config has no sft section: use configs/libero_sft.py (or a config built on it)")
  from vla_rl_jax import config as config_lib  # no JAX backend is started by these
  from vla_rl_jax import demos, sft
  try:   # the demonstrations checked against the config before JAX starts
    sft.check_manifest(config_lib.resolve(config), config.sft.demos)
  except (config_lib.ConfigError, demos.DemoError) as e:
    fail(PROG, str(e))
  from vla_rl_jax import checkpoint, metrics, trainer
  summary = run_or_exit(  # cannot go on as configured: status 1; bad config or demos: status 2
      PROG, _DEBUG.value, lambda: trainer.train_sft(config, workdir),
      (checkpoint.CheckpointError, checkpoint.WorkdirLockedError, metrics.NonFiniteError),
      (config_lib.ConfigError, demos.DemoError))
  rows = summary["train"]
  if rows:
    print(f"sft: loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}, token accuracy "
          f"{rows[0]['token_accuracy']:.3f} -> {rows[-1]['token_accuracy']:.3f} on "
          f"{summary['examples']} examples; compile {summary['compile_s']:.1f} s, median step "
          f"{summary['median_step_s']:.3f} s")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags(PROG))
