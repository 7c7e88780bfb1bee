"""Soak: a 1,000-step tiny run keeps host and device memory flat (`make soak`; marked slow).

Flat means: device memory within 5% at every 50-step point after warm-up, and no upward trend in
either beyond 5% (the median reading of the last quarter of the steps after warm-up against the
first quarter's).

Host memory is the process's resident set; device memory the backend's bytes in use (on CPU, which
keeps no statistics, the bytes of all live JAX arrays). Both are logged by the trainer with every
metrics row; the curve, sampled every 50 steps (the median of each 50-step window), is written to $SOAK_OUT (default: the test's tmp
directory) and printed.
"""

import json
import os

import pytest

from configs.default import get_config
from vla_rl_jax import metrics as metrics_lib
from vla_rl_jax import trainer

STEPS, EVERY, WARMUP = 1000, 50, 100


@pytest.mark.slow
@pytest.mark.soak
def test_memory_is_flat_over_a_thousand_steps(tmp_path, capsys):
  c = get_config("variant=tiny")
  c.train.num_steps, c.train.checkpoint_every, c.train.eval_every = STEPS, 100, 250
  work = str(tmp_path / "run")
  trainer.train_and_evaluate(c, work)
  rows = [r for r in metrics_lib.read_rows(os.path.join(work, "metrics.jsonl"))
          if r["kind"] == "train"]
  # each point: the median over the 50 steps it closes (a single reading of the resident set
  # swings by several percent with the runtime's transient buffers; a leak moves the median)
  curve = []
  for end in range(EVERY, STEPS + 1, EVERY):
    window = [r for r in rows if end - EVERY < r["step"] <= end]
    med = lambda k: sorted(r[k] for r in window)[len(window) // 2]
    curve.append({"step": end, "host_rss_mb": round(med("host_rss_mb"), 1),
                  "device_mem_mb": round(med("device_mem_mb"), 2)})
  assert [p["step"] for p in curve] == list(range(EVERY, STEPS + 1, EVERY))
  out = os.environ.get("SOAK_OUT") or str(tmp_path / "soak.json")
  with open(out, "w") as f:
    json.dump(curve, f, indent=1)
  with capsys.disabled():
    print(f"\nsoak curve ({out}):")
    for p in curve:
      print(f"  step {p['step']:5d}  host {p['host_rss_mb']:8.1f} MB  device {p['device_mem_mb']:8.2f} MB")
  # flat: no upward trend (a leak) beyond 5%: the median of every step's reading in the last
  # quarter after warm-up against the first quarter's; the resident set also swings by up to ~10%
  # between 50-step windows, both ways, as the allocator returns memory to the system or not,
  # which is not a leak, so single windows are not compared. Device memory: within 5% everywhere.
  for key in ("host_rss_mb", "device_mem_mb"):
    after = [r[key] for r in rows if r["step"] > WARMUP]
    q = len(after) // 4
    first, last = sorted(after[:q])[q // 2], sorted(after[-q:])[q // 2]
    assert last <= 1.05 * first, f"{key} grew {last / first - 1:.1%} after warm-up: {curve}"
  device = [p["device_mem_mb"] for p in curve if p["step"] > WARMUP]
  assert (max(device) - min(device)) / min(device) <= 0.05, f"device memory varies: {device}"
