"""Evaluates a run's latest (or a given) checkpoint on held-out initial states, greedily.

  python -m launch.eval --workdir=DIR [--step=N] [--num_states=256] [--temperature=0]

The model is rebuilt from the resolved config saved beside the checkpoints (workdir/config.json).
"""

import json

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_NUM = flags.DEFINE_integer("num_states", None, "Held-out initial states (default: config's).")
_TEMP = flags.DEFINE_float("temperature", None, "Sampling temperature (default: config's, 0 = greedy).")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax
  from vla_rl_jax import checkpoint as ckpt_lib
  from vla_rl_jax import metrics as metrics_lib
  from vla_rl_jax.builders import build
  from vla_rl_jax.evaluation import make_eval_fn

  cfg = ckpt_lib.read_config(_WORKDIR.value, jax.device_count())
  b = build(cfg)
  ckpt = ckpt_lib.Checkpointer(_WORKDIR.value, cfg.train.keep_checkpoints)
  step = _STEP.value if _STEP.value is not None else ckpt.latest_step()
  if step is None:
    raise SystemExit(f"no complete checkpoint under {_WORKDIR.value}/checkpoints")
  state, _ = ckpt.restore(step, *b.abstract_state, b.state_shardings, b.env_stats_shardings)
  n = _NUM.value or cfg.train.eval_num_states
  if n % cfg.batch_shards:
    raise SystemExit(f"--num_states={n} must be divisible by the {cfg.batch_shards} batch shards")
  m = metrics_lib.to_host(make_eval_fn(b, num_states=n, temperature=_TEMP.value)(state.params))
  m["task_success"] = dict(zip(b.env.instructions, m["task_success"]))
  print(json.dumps({"step": step, "num_states": n, **m}, indent=2))


if __name__ == "__main__":
  app.run(main)
