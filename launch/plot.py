"""Plots one or several runs side by side: success, loss, entropy and throughput against step.

  python -m launch.plot --workdir=/tmp/run_a --workdir=/tmp/run_b [--out=runs.png]
  python -m launch.plot --bench=env_128.jsonl --bench=env_64.jsonl --out=env.png

With --bench (JSON lines of `launch.benchmark ...:what=env`), it draws env throughput against
num_envs instead: control steps/s without a camera, with one and with both cameras, one colour per
image size and machine, bars from the slowest to the fastest repeat.

Reads each workdir's metrics.jsonl (every step once, also across resumes) and draws four panels:
held-out success (greedy evaluations; the training batch's success as a thin line), the loss,
the policy entropy and trajectories per second. Runs are labelled by their workdir's name. Writes a
PNG (default: plot.png in the first workdir) and prints its path.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from launch.common import fail, parse_flags

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "A run's workdir (repeat to compare runs).")
_BENCH = flags.DEFINE_multi_string("bench", None, "JSON lines of launch.benchmark what=env (repeat).")
_OUT = flags.DEFINE_string("out", None, "PNG to write (default: WORKDIR/plot.png of the first).")
_DPI = flags.DEFINE_integer("dpi", 110, "Resolution of the PNG.")

PANELS = (  # (title, metric kind, key)
    ("success (held-out, greedy)", "eval", "success_rate"),
    ("loss", "train", "loss"),
    ("entropy", "train", "entropy"),
    ("trajectories / s", "train", "trajectories_per_s"),
)


_OLD_NAMES = {"trajectories_per_s": "samples_per_s"}  # runs logged before the rename


def plot(workdirs, out: str, dpi: int = 110) -> str:
  """Draws the runs in `workdirs` into the PNG `out`; returns its path."""
  import matplotlib
  matplotlib.use("Agg")  # files only: no display needed
  import matplotlib.pyplot as plt
  from vla_rl_jax import metrics as metrics_lib

  fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), constrained_layout=True)
  for w in workdirs:
    rows = metrics_lib.read_rows(os.path.join(w, metrics_lib.Writer.FILE))
    label = os.path.basename(os.path.normpath(w))
    for ax, (title, kind, key) in zip(axes.flat, PANELS):
      x, y = metrics_lib.series(rows, kind, key, _OLD_NAMES)
      line, = ax.plot(x, y, marker="o" if kind == "eval" else None, markersize=3, label=label)
      if key == "success_rate":  # the training batch's success, for context
        tx, ty = metrics_lib.series(rows, "train", key)
        ax.plot(tx, ty, linewidth=0.6, alpha=0.5, color=line.get_color())
      ax.set_title(title)
      ax.set_xlabel("step")
      ax.grid(alpha=0.3)
  axes.flat[0].set_ylim(-0.02, 1.02)
  axes.flat[0].legend(fontsize=8)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=dpi)
  plt.close(fig)
  return out


_CAMERA_SETTINGS = (("", "no camera", "-"), ("_render", "one camera", "--"),
                    ("_render_both", "two cameras", ":"))


def plot_bench(rows, out: str, dpi: int = 110) -> str:
  """Env throughput against num_envs from `launch.benchmark` env rows; returns the PNG's path."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  groups: dict[tuple, list] = {}
  for r in rows:
    if r.get("bench") == "env":
      groups.setdefault((r.get("device_kind", "?"), r.get("image_size")), []).append(r)
  if not groups:
    raise ValueError("no env benchmark rows (bench: env) in the given files")
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, ((device, size), rs) in enumerate(sorted(groups.items(), key=str)):
    rs = sorted(rs, key=lambda r: r["num_envs"])
    colour = colours[i % len(colours)]
    for sfx, name, style in _CAMERA_SETTINGS:
      pts = [(r["num_envs"], r[f"control_steps_per_s{sfx}"], r.get(f"control_steps_per_s{sfx}_min"),
              r.get(f"control_steps_per_s{sfx}_max")) for r in rs
             if isinstance(r.get(f"control_steps_per_s{sfx}"), (int, float))]
      if not pts:
        continue
      x, y = [p[0] for p in pts], [p[1] for p in pts]
      err = None
      if all(p[2] is not None and p[3] is not None for p in pts):
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
      axes[0].errorbar(x, y, yerr=err, linestyle=style, color=colour, marker="o", markersize=3,
                       capsize=2, label=f"{device}, {size}px, {name}")
      if sfx:
        frames = [p[1] * (2 if sfx == "_render_both" else 1) for p in pts]
        axes[1].plot(x, frames, linestyle=style, color=colour, marker="o", markersize=3,
                     label=f"{device}, {size}px, {name}")
  for ax, title in zip(axes, ("env control steps / s", "rendered frames / s")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("num_envs (batch)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
  axes[0].legend(fontsize=7)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=dpi)
  plt.close(fig)
  return out


def _main_bench(paths) -> None:
  import json
  rows = []
  for path in paths:
    if not os.path.isfile(path):
      fail("launch.plot", f"--bench={path}: no such file")
    with open(path) as f:
      for n, line in enumerate(f, 1):
        if line.strip():
          try:
            rows.append(json.loads(line))
          except json.JSONDecodeError:
            fail("launch.plot", f"--bench={path}: line {n} is not JSON (benchmark output only)")
  out = _OUT.value or os.path.splitext(paths[0])[0] + ".png"
  if not out.lower().endswith(".png"):
    fail("launch.plot", f"--out={out}: must name a .png file")
  try:
    print(plot_bench(rows, out, _DPI.value))
  except ValueError as e:
    fail("launch.plot", str(e))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # matplotlib's font cache notices
  if not 20 <= _DPI.value <= 600:
    fail("launch.plot", f"--dpi={_DPI.value}: must be in [20, 600]")
  if _BENCH.value:
    if _WORKDIRS.value:
      fail("launch.plot", "give either --workdir (training runs) or --bench (benchmark output)")
    return _main_bench(_BENCH.value)
  workdirs = _WORKDIRS.value or []
  if not workdirs:
    fail("launch.plot", "give at least one --workdir=DIR (a training run)")
  for w in workdirs:
    if not os.path.isfile(os.path.join(w, "metrics.jsonl")):
      fail("launch.plot", f"--workdir={w}: holds no metrics.jsonl (not a training run's workdir)")
  out = _OUT.value or os.path.join(workdirs[0], "plot.png")
  if not out.lower().endswith(".png"):
    fail("launch.plot", f"--out={out}: must name a .png file")
  print(plot(workdirs, out, _DPI.value))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags("launch.plot"))
