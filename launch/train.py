"""Launches (or resumes) a GRPO run: flags -> ConfigDict -> vla_rl_jax.trainer.train_and_evaluate.

  python -m launch.train --config=configs/default.py:variant=tiny --workdir=/tmp/run \
      --config.rl.group_size=8

Run the same command on every host of a pod with --config.distributed.num_processes=<hosts>.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from launch.common import check_workdir, loaded_config, parse_flags, run_or_exit

def _config_help() -> str:
  """--help names what the config file's argument and the registries accept."""
  from configs.default import VARIANTS  # noqa: PLC0415  (no JAX backend is started by these)
  from envs import registry  # noqa: PLC0415
  from vla_rl_jax.rl import registry as rl_registry  # noqa: PLC0415  (imports jax, starts nothing)
  loss_opts = ", ".join(sorted(rl_registry.prefill("loss")))
  return (f"Config file and argument, e.g. configs/default.py:variant=tiny,env=fake_reach. "
          f"variant: {'|'.join(VARIANTS)}; env: {'|'.join(registry.names())}. Override any field "
          f"with --config.SECTION.FIELD=VALUE, e.g. --config.rl.loss="
          f"{'|'.join(rl_registry.names('loss'))}, --config.rl.loss_kwargs.OPTION=VALUE (the "
          f"loss's declared options: {loss_opts}), --config.rl.advantage="
          f"{'|'.join(rl_registry.names('advantage'))}, --config.env.kwargs.OPTION=VALUE (the env's "
          f"declared options).")


_CONFIG = config_flags.DEFINE_config_file("config", None, _config_help(), lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and the resolved config.")
_DEBUG = flags.DEFINE_bool("debug", False, "Show the full traceback of an error instead of one line.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file operation at INFO
  workdir = _WORKDIR.value
  check_workdir("launch.train", workdir)
  from vla_rl_jax import trainer  # after flag parsing; jax stays uninitialised until here
  from vla_rl_jax import checkpoint, metrics
  from vla_rl_jax.config import ConfigError
  # the run cannot go on as configured: one line that says why and what to do, exit 1; a bad
  # config (raised by config.resolve, before anything is compiled): exit 2
  summary = run_or_exit(
      "launch.train", _DEBUG.value,
      lambda: trainer.train_and_evaluate(loaded_config("launch.train", _CONFIG), workdir),
      (checkpoint.CheckpointError, checkpoint.WorkdirLockedError, metrics.NonFiniteError,
       metrics.RenderOverflowError), (ConfigError,))
  evals = summary["eval"]
  if evals:
    print(f"success (greedy, held-out): start {evals[0]['success_rate']:.3f} -> "
          f"end {evals[-1]['success_rate']:.3f}; compile {summary['compile_s']:.1f} s, "
          f"median step {summary['median_step_s']:.3f} s")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags("launch.train"))
