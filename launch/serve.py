"""Serves a trained checkpoint over a websocket: observation -> action chunk (vla_rl_jax/serving.py).

  python -m launch.serve --workdir=DIR [--step=N] [--host=127.0.0.1] [--port=8000] [--temperature=0]

Binds localhost by default (give --host=0.0.0.0 to accept other machines). The checkpoint is
restored verified (digests, finiteness), the newest one that verifies unless --step is given.
Client side: `from vla_rl_jax.serving import PolicyClient; PolicyClient("ws://HOST:PORT").act(
image, instruction="...")`.
"""

import math
import os
import sys

from absl import app, flags, logging

from launch.common import fail, parse_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest that verifies).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (default: this machine only).")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on.")
_TEMP = flags.DEFINE_float("temperature", None, "Sampling temperature (default: the config's "
                           "evaluation temperature; 0 = greedy).")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  prog = "launch.serve"
  workdir = _WORKDIR.value
  if not workdir:
    fail(prog, "give --workdir=DIR (a training run)")
  if not 1 <= _PORT.value <= 65535:
    fail(prog, f"--port={_PORT.value}: must be in [1, 65535]")
  if _TEMP.value is not None and not (math.isfinite(_TEMP.value) and _TEMP.value >= 0):
    fail(prog, f"--temperature={_TEMP.value}: must be a finite number >= 0 (0 = greedy)")
  import jax
  from vla_rl_jax import checkpoint as ckpt_lib
  from vla_rl_jax import serving
  from vla_rl_jax.builders import build
  if not os.path.exists(os.path.join(workdir, ckpt_lib.CONFIG_FILE)):
    fail(prog, f"--workdir={workdir}: holds no {ckpt_lib.CONFIG_FILE} (not a training run's workdir)")
  cfg = ckpt_lib.read_config(workdir, jax.device_count())
  b = build(cfg)
  ckpt = ckpt_lib.Checkpointer(workdir, cfg.train.keep_checkpoints)
  warn = lambda text: print(f"{prog}: warning: {text}", file=sys.stderr, flush=True)
  try:
    found = ckpt.restore_for_inference(_STEP.value, *b.abstract_state, b.state_shardings,
                                       b.env_stats_shardings, warn=warn)
  except ckpt_lib.CheckpointError as e:
    fail(prog, str(e))
  if found is None:
    fail(prog, f"--workdir={workdir}: no complete checkpoint under {workdir}/checkpoints")
  step, state, _ = found
  ckpt.close()
  temp = cfg.policy.eval_temperature if _TEMP.value is None else _TEMP.value
  server = serving.PolicyServer(b, state.params, temperature=temp, step=step)
  ready = lambda _: print(f"serving {os.path.abspath(workdir)} step {step} on "
                          f"ws://{_HOST.value}:{_PORT.value} ({server.describe()}; temperature "
                          f"{temp})", flush=True)
  try:
    serving.serve(server, _HOST.value, _PORT.value, ready=ready)
  except OSError as e:
    fail(prog, f"cannot listen on {_HOST.value}:{_PORT.value} ({e.strerror or e})")
  except KeyboardInterrupt:
    pass


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags("launch.serve"))
