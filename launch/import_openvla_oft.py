"""Converts an OpenVLA-OFT checkpoint on disk into a workdir that launch.eval / launch.serve load and
train.init_from starts RL from (vla_rl_jax/importing.py reads and writes, vla_rl_jax/models/
import_oft.py maps the tensors; this module only parses flags).

  python -m launch.import_openvla_oft --src=DIR --out=DIR [--variant=7b] [--env=libero_spatial]
  python -m launch.import_openvla_oft --src=DIR --out=DIR --config=configs/default.py:variant=7b \
      [--config.model.X=...]

DIR holds model.safetensors, or model-0000N-of-0000M.safetensors with model.safetensors.index.json,
and config.json. config.json's fields are checked against the config when present (image_sizes,
timm_model_ids' patch size and tower kinds, text_config's hidden_size / num_hidden_layers /
num_attention_heads / num_key_value_heads / intermediate_size / rms_norm_eps / rope_theta,
n_action_bins): a mismatch names the field. Every tensor name and shape is then checked by the
importer. The output is OUT/config.json (the resolved config) and OUT/checkpoints/0: a fresh train
state (optimiser state at its init) holding the imported parameters, saved with digests like any
run's. Memory: the imported parameters go straight to their shards and the optimiser state is
built around them, with no random initialisation first (7b: fp32 params + Adam moments, ~90 GB over
the devices at the peak; the host holds one numpy copy of the parameters until they are placed).

Tokenizer: the checkpoint's tokenizer.model (SentencePiece; preferred) or tokenizer.json is loaded
and checked (its text ids must fit the 32,000-row vocabulary), copied to OUT/, and becomes the run's
`model.tokenizer` (an absolute path: move the workdir and set --config.model.tokenizer to follow it),
with OpenVLA's prompt ("In: What action should the robot take to {instruction}?\nOut:") as
`model.prompt="openvla"`; RL from the import (train.init_from=OUT) sets the same two fields. Without one in DIR the config's tokenizer stays (the shipped "libero" one for the oft
variants), which is NOT what real OpenVLA weights were trained on. Nothing is downloaded.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from launch.common import fail, loaded_config, parse_flags, run_or_exit
from vla_rl_jax.importing import PROG, convert

_SRC = flags.DEFINE_string("src", None, "The OpenVLA-OFT checkpoint directory (safetensors + "
                           "config.json).")
_OUT = flags.DEFINE_string("out", None, "The workdir to write (must not hold a checkpoint yet).")
_VARIANT = flags.DEFINE_string("variant", "7b", "configs/default.py's variant, when --config is not "
                               "given.")
_ENV = flags.DEFINE_string("env", "libero_spatial", "The env the imported policy acts in, when "
                           "--config is not given.")
_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file (overrides --variant/--env).",
                                          lock_config=True)
_DEBUG = flags.DEFINE_bool("debug", False, "Raise errors with their traceback.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if not _SRC.value or not os.path.isdir(_SRC.value):
    fail(PROG, f"--src={_SRC.value}: give the OpenVLA-OFT checkpoint directory")
  if not _OUT.value:
    fail(PROG, "give --out=DIR (the workdir to write)")
  from vla_rl_jax import checkpoint as ckpt_lib  # noqa: PLC0415
  from vla_rl_jax import config as config_lib  # noqa: PLC0415
  from vla_rl_jax.models import import_oft  # noqa: PLC0415
  if _CONFIG.value is not None:
    config = loaded_config(PROG, _CONFIG)
  else:
    from configs.default import get_config  # noqa: PLC0415
    try:
      config = get_config(f"variant={_VARIANT.value},env={_ENV.value}")
    except ValueError as e:
      fail(PROG, f"--variant={_VARIANT.value} / --env={_ENV.value}: {e}")
  run_or_exit(PROG, _DEBUG.value, lambda: convert(_SRC.value, _OUT.value, config),
              run_errors=(ckpt_lib.CheckpointError, OSError),
              usage_errors=(import_oft.CheckpointImportError, config_lib.ConfigError, ValueError))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags(PROG))
  sys.exit(0)
