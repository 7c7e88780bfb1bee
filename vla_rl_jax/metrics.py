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


class NonFiniteError(FloatingPointError):
  """A train step produced non-finite values; the run stopped before saving any of them."""


def check_finite(metrics: Mapping[str, Any], step: int, last_checkpoint: int | None = None,
                 keys=("loss", "grad_norm")) -> None:
  """Stops the run (before any checkpoint of the broken state) when the loss, the gradient norm or
  the parameters / optimiser moments themselves (`nonfinite_state`, counted inside the step) hold
  a NaN or an infinity."""
  bad = [f"{k}={metrics[k]}" for k in keys
         if metrics.get(k) is not None and not math.isfinite(metrics[k])]
  n = metrics.get("nonfinite_state") or 0
  if n:
    bad.append(f"{int(n)} non-finite values in the parameters and optimiser state")
  if not bad:
    return
  if last_checkpoint is None:
    saved = "no checkpoint was written; start again"
  else:
    saved = (f"the newest checkpoint (step {last_checkpoint}) is intact and finite; rerun the same "
             f"command to resume from it")
  unstable = metrics.get("unstable_frac")
  raise NonFiniteError(
      f"train step {step}: {', '.join(bad)}. Nothing from this step was saved: {saved} with a "
      f"lower --config.optim.learning_rate (now too high?) or a smaller --config.optim.grad_clip "
      f"(both may change on resume)"
      + (f"; {unstable:.0%} of this step's episodes blew up in the physics (unstable_frac)"
         if unstable else "") + ".")


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


def _strict(v: Any) -> Any:
  """JSON-safe value: non-finite floats become null (bare NaN is not JSON)."""
  if isinstance(v, float) and not math.isfinite(v):
    return None
  if isinstance(v, (list, tuple)):
    return [_strict(x) for x in v]
  if isinstance(v, Mapping):
    return {k: _strict(x) for k, x in v.items()}
  return v


def _hms(seconds: float) -> str:
  s = int(round(max(seconds, 0.0)))
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _si(x: float) -> str:
  """1234 -> '1.2k', 2.5e6 -> '2.5M' (progress-line rates)."""
  for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= div:
      return f"{x / div:.1f}{unit}"
  return f"{x:.0f}"


def read_rows(path: str) -> list[dict[str, Any]]:
  """The complete JSON rows of a metrics file (a line cut short by a kill is skipped)."""
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
          rows.append(row)
  return rows


# train-row values averaged over the step's live minibatches: they read 0.0 when dynamic sampling
# dropped every group and no update ran (updates_applied == 0), which is no measurement
UPDATE_KEYS = ("loss", "pg_loss", "entropy", "grad_norm", "kl", "approx_kl_old", "clip_frac",
               "ratio_mean", "ratio_max_dev", "adv_abs_mean")


def series(rows: list[dict[str, Any]], kind: str, key: str,
           aliases: dict[str, str] | None = None) -> tuple[list[int], list[float]]:
  """(steps, values) of `key` in the rows of `kind` ("train" or "eval"), by step; a train row's
  UPDATE_KEYS value is left out when that step applied no update (it would draw as a 0)."""
  get = lambda r: r.get(key, r.get((aliases or {}).get(key, key)))  # noqa: E731
  pts = sorted((r["step"], get(r)) for r in rows
               if r.get("kind") == kind and isinstance(get(r), (int, float))
               and not (kind == "train" and key in UPDATE_KEYS and r.get("updates_applied") == 0))
  return [p[0] for p in pts], [p[1] for p in pts]


def read_tensorboard(logdir: str) -> list[Any]:
  """Every event of the TensorBoard files in `logdir`, file by file in name (= time) order, as
  tensorboardX's Event protos (TFRecord framing: length, its crc, data, data crc)."""
  import glob
  import struct
  from tensorboardX.proto.event_pb2 import Event
  events = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    i = 0
    while i + 12 <= len(data):
      (n,) = struct.unpack("<Q", data[i:i + 8])
      events.append(Event.FromString(data[i + 12:i + 12 + n]))
      i += 12 + n + 4
  return events


class Writer:
  """Writes scalars to stdout (progress line), workdir/metrics.jsonl and TensorBoard.

  A run segment that starts at step `start_step` (0, or the step a resumed run restored) first
  drops the rows a killed segment logged after that step, and the evaluation row at it (the
  trainer evaluates there again), so metrics.jsonl holds each step once, as an uninterrupted run
  writes it. TensorBoard gets one writer per segment, opened on the first write, with
  `purge_step` so that the resumed curves do not fold back over the dropped steps.
  """

  FILE = "metrics.jsonl"

  def __init__(self, workdir: str, total_steps: int, enabled: bool = True, tensorboard: bool = True,
               start_step: int = 0):
    self.enabled, self.total = enabled, total_steps
    self._jsonl = self._tb = None
    self._tb_dir = os.path.join(workdir, "tb") if enabled and tensorboard else None
    self._purge = start_step + 1 if start_step else None
    self.dropped_eval_at_start = False
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      path = os.path.join(workdir, self.FILE)
      self._truncate(path, start_step)
      self._jsonl = open(path, "a", buffering=1)
    self._t0 = time.time()

  def _truncate(self, path: str, start: int) -> None:
    if not os.path.exists(path):
      return
    rows = read_rows(path)
    keep = [r for r in rows
            if r["step"] < start or (r["step"] == start and r.get("kind") != "eval")]
    self.dropped_eval_at_start = any(r["step"] == start and r.get("kind") == "eval" for r in rows)
    with open(path) as f:
      unchanged = len(keep) == sum(1 for _ in f)
    if unchanged:
      return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      for r in keep:
        f.write(json.dumps(r, allow_nan=False) + "\n")
    os.replace(tmp, path)

  def write(self, step: int, scalars: Mapping[str, Any], prefix: str = "train") -> None:
    if not self.enabled:
      return
    row = {"step": step, "kind": prefix, "time": round(time.time() - self._t0, 3), **scalars}
    self._jsonl.write(json.dumps(_strict(row), allow_nan=False) + "\n")
    if self._tb_dir is not None:
      self._tensorboard()
      for k, v in scalars.items():
        for tag, x in (v.items() if isinstance(v, Mapping) else ((None, v),)):
          if isinstance(x, (int, float)) and math.isfinite(x):  # a dict: one curve per name
            self._tb.add_scalar(f"{prefix}/{k}" + (f"/{tag}" if tag is not None else ""), x, step)

  def text(self, tag: str, text: str, step: int = 0) -> None:
    """A text record in TensorBoard (the resolved config of the run segment, as Markdown)."""
    if self.enabled and self._tb_dir is not None:
      self._tensorboard().add_text(tag, text, step)

  def image(self, tag: str, image: Any, step: int) -> None:
    """An RGB picture (u8[H, W, 3]) in TensorBoard's image tab (e.g. an evaluation rollout)."""
    if self.enabled and self._tb_dir is not None:
      self._tensorboard().add_image(tag, image, step, dataformats="HWC")

  def _tensorboard(self):
    if self._tb is None:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(self._tb_dir, purge_step=self._purge)
    return self._tb

  def progress(self, step: int, m: Mapping[str, Any]) -> None:
    """One line per logged step: bar, success, trajectories/s and env steps/s, s/step, loss, the
    segment's elapsed time and an ETA from its mean step time (evaluations not included)."""
    if not self.enabled:
      return
    self._steps_timed = getattr(self, "_steps_timed", 0) + 1
    self._time_in_steps = getattr(self, "_time_in_steps", 0.0) + m.get("step_time_s", 0.0)
    eta = self._time_in_steps / self._steps_timed * max(self.total - step, 0)
    width = 20
    filled = int(width * step / max(self.total, 1))
    bar = "#" * filled + "." * (width - filled)
    print(f"[{bar}] step {step}/{self.total} | success {m.get('success_rate', float('nan')):.3f} | "
          f"{m.get('trajectories_per_s', 0.0):.0f} traj/s, "
          f"{_si(m.get('env_steps_per_s', 0.0))} env steps/s | {m.get('step_time_s', 0.0):.2f} s/step | "
          f"loss {m.get('loss', float('nan')):+.4f} | {_hms(time.time() - self._t0)} elapsed, "
          f"ETA {_hms(eta)}", flush=True)

  def log(self, text: str) -> None:
    if self.enabled:
      print(text, flush=True, file=sys.stdout)

  def warn(self, text: str) -> None:
    if self.enabled:
      print(f"warning: {text}", flush=True, file=sys.stderr)

  def close(self) -> None:
    if self._jsonl:
      self._jsonl.close()
      self._jsonl = None
    if self._tb:
      self._tb.close()
      self._tb = None
