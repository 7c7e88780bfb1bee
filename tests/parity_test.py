"""Parity of the OpenVLA-OFT import with the reference architecture definitions (`make test-parity`).

tests/parity_reference.py runs in .venv-parity (torch, transformers, timm; $PARITY_PYTHON) and
writes tiny random timm SigLIP / DINOv2-reg4 towers, OpenVLA's projector and a transformers Llama as
an OpenVLA-style checkpoint plus the action logits OpenVLA-OFT's pipeline computes with them. Here
launch.import_openvla_oft converts that checkpoint, the eval path restores it, and our OFTVLA's
action logits (under jit, fp32) must equal the reference's. Marked `parity`: `make test` and
`make test-slow` exclude it, so the default suite needs no torch.
"""

import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.default import get_config
from vla_rl_jax.types import PolicyObs

pytestmark = pytest.mark.parity
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_ACT, RTOL, ATOL = 8, 1e-4, 1e-4


def parity_config():
  """The reference's shapes (tests/parity_reference.py) as a tiny oft config."""
  c = get_config("variant=tiny")
  m = c.model
  m.name, m.ordinal_head, m.patch_size = "oft", False, 8
  m.width, m.depth, m.num_heads, m.num_kv_heads, m.mlp_dim = 64, 2, 4, 2, 96
  m.vocab_size, m.max_text_len, m.use_proprio = 1024, 32, False
  m.siglip.update(dict(width=32, depth=2, num_heads=2, mlp_dim=48))      # the checkpoint has 3
  m.dinov2.update(dict(width=32, depth=2, num_heads=2, mlp_dim=48, num_registers=4))
  c.env.image_size = 32
  return c


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  python = os.environ.get("PARITY_PYTHON", os.path.join(ROOT, ".venv-parity", "bin", "python"))
  if not os.path.exists(python):   # make test-parity sets PARITY_PYTHON: missing there is a failure
    (pytest.fail if "PARITY_PYTHON" in os.environ else pytest.skip)(
        f"no parity interpreter at {python} (run `make test-parity`)")
  src = str(tmp_path_factory.mktemp("openvla_src"))
  r = subprocess.run([python, os.path.join(ROOT, "tests", "parity_reference.py"), src],
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  return src, dict(np.load(os.path.join(src, "reference.npz")))


def test_imported_action_logits_equal_the_torch_pipeline(reference, tmp_path):
  from vla_rl_jax import importing as launcher
  from vla_rl_jax import checkpoint as ckpt_lib
  from vla_rl_jax.builders import build
  from vla_rl_jax.models import oft
  src, ref = reference
  out = str(tmp_path / "imported")
  launcher.convert(src, out, parity_config(), log=print)
  cfg = ckpt_lib.read_config(out, jax.device_count())          # what eval / serve do
  b = build(cfg)
  ck = ckpt_lib.Checkpointer(out, cfg.train.keep_checkpoints)
  step, state, _ = ck.restore_for_inference(None, *b.abstract_state, b.state_shardings,
                                            b.env_stats_shardings)
  ck.close()
  assert step == 0
  model = oft.OFTVLA(cfg.model, num_action_tokens=N_ACT)
  obs = PolicyObs(image=jnp.asarray(ref["image"]), text=jnp.asarray(ref["text"]),
                  proprio=jnp.zeros((2, 1), jnp.float32))
  got = np.asarray(jax.jit(lambda p: model.apply({"params": p}, obs))(state.params))
  want = ref["logits"]
  assert got.shape == want.shape == (2, N_ACT, 256)
  err = np.abs(got - want).max()
  print(f"parity vs torch {ref['versions']}: max |diff| {err:.2e}, max |logit| "
        f"{np.abs(want).max():.2f}")
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
