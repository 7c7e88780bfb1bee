"""The policy server: a checkpoint behind a websocket answers observation -> action chunk, and a
malformed request gets an error reply without ending the server."""

import os
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs.default import get_config
from vla_rl_jax import checkpoint as ckpt_lib
from vla_rl_jax import serving, trainer
from vla_rl_jax.builders import build
from vla_rl_jax.models import tokenizer
from vla_rl_jax.types import PolicyObs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_server_round_trip_and_malformed_requests(tmp_path):
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
  c.train.num_steps, c.train.checkpoint_every, c.train.eval_every = 2, 2, 100
  c.train.eval_num_states = 8
  work = str(tmp_path / "run")
  out = trainer.train_and_evaluate(c, work, quiet=True)
  params = out["final_state"].params
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
  proc = subprocess.Popen([sys.executable, "-m", "launch.serve", f"--workdir={work}",
                           f"--port={port}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    line = proc.stdout.readline()
    assert line.startswith(f"serving {os.path.abspath(work)} step 2 on ws://127.0.0.1:{port}"), (
        line + proc.stderr.read() if proc.poll() is not None else line)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    with serving.PolicyClient(f"ws://127.0.0.1:{port}") as client:
      a = client.act(images[0], instruction="reach the red target")
      assert a.shape == (4, 2) and a.dtype == np.float32 and np.all(np.abs(a) <= 1.0)
      # the same greedy chunk the run's own policy computes from those parameters
      b = build(ckpt_lib.read_config(work, jax.device_count()))
      obs = PolicyObs(image=jnp.asarray(images[:1]),
                      text=jnp.asarray(tokenizer.encode_all(["reach the red target"],
                                                            c.model.max_text_len)),
                      proprio=jnp.zeros((1, b.env.proprio_size), jnp.float32))
      want = np.asarray(b.policy.sample(params, obs, jax.random.PRNGKey(0), 0.0)[0][0])
      np.testing.assert_allclose(a, want, atol=1e-6)
      batch = client.request({"image": images, "task_id": [0, 1, 2]})["actions"]
      assert batch.shape == (3, 4, 2)
      np.testing.assert_allclose(batch[0], want, atol=1e-6)   # task 0 is "reach the red target"
      # malformed requests: an error reply naming the problem, and the server keeps serving
      bad = [({"image": images[0][:16], "instruction": "x"}, "image: uint8[16, 32, 3], expected"),
             ({"image": images[0].astype(np.float32), "task_id": 0}, "expected uint8[32, 32, 3]"),
             ({"image": images[0]}, "exactly one of 'instruction'"),
             ({"image": images[0], "task_id": 9}, "task_id=9"),
             ({"image": images[0], "task_id": 0, "speed": 1}, "unknown field(s) ['speed']"),
             ([1, 2, 3], "a request is a map")]
      for req, msg in bad:
        reply = client.request(req)
        assert "error" in reply and msg in reply["error"], (req, reply)
      client._ws.send(b"\xc1 not msgpack")
      reply = serving.unpack(client._ws.recv(timeout=30))
      assert "undecodable request" in reply["error"], reply
      np.testing.assert_allclose(client.act(images[0], task_id=0), want, atol=1e-6)
    assert proc.poll() is None  # still serving
  finally:
    proc.terminate()
    proc.wait(timeout=30)
