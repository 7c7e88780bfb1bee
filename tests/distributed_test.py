"""Two jax.distributed processes on one machine (localhost coordinator, CPU, gloo) train together."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_process_run_trains_and_checkpoints(tmp_path):
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="4")
  procs = []
  for pid in range(2):
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "launch.train", "--config=configs/default.py:variant=tiny",
         f"--workdir={tmp_path}", "--config.rl.num_prompts=8", "--config.rl.group_size=4",
         "--config.rl.minibatch_size=16", "--config.train.num_steps=3",
         "--config.train.checkpoint_every=3", "--config.train.eval_every=3",
         "--config.train.eval_num_states=8", "--config.distributed.num_processes=2",
         f"--config.distributed.process_id={pid}",
         f"--config.distributed.coordinator_address=127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out
  # the global mesh spans both processes' devices
  assert "devices: 8 (cpu) over 2 process(es)" in outs[0]
  assert "distributed: all 2 processes joined" in outs[1], outs[1]
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  train = [r for r in rows if r["kind"] == "train"]
  assert [r["step"] for r in train] == [1, 2, 3]  # only process 0 writes
  assert (tmp_path / "checkpoints" / "3").is_dir()
  # the same 8-device mesh in one process gives the same training metrics
  from configs.default import get_config
  from vla_rl_jax import trainer
  c = get_config("variant=tiny")
  c.rl.num_prompts, c.rl.group_size, c.rl.minibatch_size = 8, 4, 16
  c.train.num_steps, c.train.checkpoint_every, c.train.eval_every = 3, 3, 3
  c.train.eval_num_states = 8
  ref = trainer.train_and_evaluate(c, str(tmp_path / "ref"), quiet=True)
  for got, want in zip(train, ref["train"]):
    for k in ("success_rate", "loss", "grad_norm", "entropy", "valid_group_frac"):
      np.testing.assert_allclose(got[k], want[k], rtol=2e-4, atol=2e-5, err_msg=k)


def test_a_missing_peer_ends_with_one_clear_line(tmp_path):
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
  p = subprocess.run(
      [sys.executable, "-m", "launch.train", "--config=configs/default.py:variant=tiny",
       f"--workdir={tmp_path}", "--config.distributed.num_processes=2",
       "--config.distributed.process_id=0", "--config.distributed.initialization_timeout=4",
       f"--config.distributed.coordinator_address=127.0.0.1:{port}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert p.returncode == 1, p.stdout + p.stderr
  assert f"joining the coordinator at 127.0.0.1:{port} (listening on 127.0.0.1:{port})" in p.stdout
  assert "still waiting for all 2 processes" in p.stdout, p.stdout
  assert p.stderr.strip().splitlines()[-1].startswith(
      f"launch.train: not all 2 processes joined the coordinator at 127.0.0.1:{port} within 4 s")
  assert "Check failure" not in p.stderr  # jax's own abort (a C++ stack dump) never came


def test_malformed_coordinator_address_is_a_config_error():
  import pytest
  from configs.default import get_config
  from vla_rl_jax import config as config_lib
  for bad in ("localhost", "host:0", "host:99999", "http://host:1234", "host:12a"):
    c = get_config("variant=tiny")
    c.distributed.num_processes, c.distributed.coordinator_address = 2, bad
    with pytest.raises(config_lib.ConfigError, match="distributed.coordinator_address.*HOST:PORT"):
      config_lib.resolve(c, 8)
  for good in ("10.0.0.1:1234", "node-0.cluster.local:8476", "[::1]:1234"):
    c.distributed.coordinator_address = good
    config_lib.resolve(c, 8)
