"""Host-side metric writers (stdout progress line, JSONL, TensorBoard) and the non-finite guard."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping

import numpy as np


def to_host(tree: Mapping[str, Any]) -> dict[str, Any]:
  """Replicated device arrays -> python floats / lists (works on every process of a pod)."""
  out = {}
  for k, v in tree.items():
    if hasattr(v, "addressable_data"):
      v = v.addressable_data(0)
    a = np.asarray(v)
    out[k] = a.item() if a.ndim == 0 else a.tolist()
  return out


def check_finite(metrics: Mapping[str, Any], step: int, keys=("loss", "grad_norm")) -> None:
  """Stops the run (before any checkpoint of the broken state) when the loss goes non-finite."""
  for k in keys:
    v = metrics.get(k)
    if v is not None and not math.isfinite(v):
      raise FloatingPointError(
          f"non-finite {k}={v} at step {step}; the last checkpoint is intact. Lower "
          f"config.optim.learning_rate or check the env for physics blow-ups (unstable_frac).")


class RenderOverflowError(RuntimeError):
  """Frames of a step were rendered with too little culling capacity: they may miss geoms."""


def check_render(metrics: Mapping[str, Any], step: int, what: str = "train step") -> None:
  """Stops the run (before any checkpoint of a state trained on wrong images) when the renderer
  reported a per-tile culling overflow."""
  n = metrics.get("render_overflow")
  if n:
    raise RenderOverflowError(
        f"{what} {step}: the renderer's per-tile culling capacity overflowed {int(n)} time(s), so "
        f"those frames may miss geoms; the run stops before saving (the last checkpoint is "
        f"intact). Raise the task renderer's capacity: the env's render_kwargs "
        f"(max_candidates=..., or calibration_data=<states like these>; see envs/render.py).")


class Writer:
  """Writes scalars to stdout (progress line), workdir/metrics.jsonl and TensorBoard."""

  def __init__(self, workdir: str, total_steps: int, enabled: bool = True, tensorboard: bool = True):
    self.enabled, self.total = enabled, total_steps
    self._jsonl = self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
      if tensorboard:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
    self._t0 = time.time()

  def write(self, step: int, scalars: Mapping[str, Any], prefix: str = "train") -> None:
    if not self.enabled:
      return
    row = {"step": step, "kind": prefix, "time": round(time.time() - self._t0, 3), **scalars}
    self._jsonl.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        if isinstance(v, (int, float)) and math.isfinite(v):
          self._tb.add_scalar(f"{prefix}/{k}", v, step)

  def progress(self, step: int, m: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    width = 20
    filled = int(width * step / max(self.total, 1))
    bar = "#" * filled + "." * (width - filled)
    print(f"[{bar}] step {step}/{self.total} | success {m.get('success_rate', float('nan')):.3f} | "
          f"{m.get('samples_per_s', 0.0):.0f} samples/s | {m.get('step_time_s', 0.0):.2f} s/step | "
          f"loss {m.get('loss', float('nan')):+.4f}", flush=True)

  def log(self, text: str) -> None:
    if self.enabled:
      print(text, flush=True, file=sys.stdout)

  def close(self) -> None:
    if self._jsonl:
      self._jsonl.close()
    if self._tb:
      self._tb.close()
