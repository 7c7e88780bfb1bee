"""Orbax checkpoints restored straight into sharded abstract targets; the resolved config beside.

Orbax writes each step to a temporary directory and renames it when complete, so a run killed while
saving leaves the last complete checkpoint as the latest one. Nothing is pickled: arrays go through
orbax's array handlers and the config is JSON.

Each checkpoint also records a digest of every array (vla_rl_jax.integrity), written in the same
atomic step directory; a restore recomputes them and checks that no value is non-finite, so a
truncated, deleted or bit-flipped file is detected, and `restore_latest` falls back to the newest
checkpoint that verifies, saying which ones it skipped and why. A run holds `workdir/LOCK` (host,
pid) for its lifetime, so two trainers never share a workdir.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from vla_rl_jax import config as config_lib
from vla_rl_jax import integrity

CONFIG_FILE = "config.json"


def write_config(workdir: str, cfg: config_lib.Config) -> None:
  """Atomically writes the resolved config as workdir/config.json (only process 0 writes)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".config.", suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    f.write(config_lib.dumps(cfg))
  # mkstemp makes the file private (0600); other users of a shared workdir read it (eval, plots)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  os.replace(tmp, os.path.join(workdir, CONFIG_FILE))


def read_config_json(workdir: str) -> dict | None:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_config(workdir: str, num_devices: int | None = None) -> config_lib.Config:
  """The run's config with a mesh filled from THIS machine's devices (for eval/export)."""
  with open(os.path.join(workdir, CONFIG_FILE)) as f:
    return config_lib.loads(f.read(), num_devices, fresh_topology=True)


class CheckpointError(RuntimeError):
  """No checkpoint of a workdir can be restored intact (or a given one fails verification)."""


_STATUS = re.compile(r"\b(NOT_FOUND|DATA_LOSS|FAILED_PRECONDITION|OUT_OF_RANGE|INVALID_ARGUMENT|"
                     r"UNKNOWN|INTERNAL|UNAVAILABLE|PERMISSION_DENIED):")


def _one_line(e: BaseException, limit: int = 300) -> str:
  """The most telling line of an orbax/tensorstore error chain: tensorstore's own status message
  (which names the array and the file) where there is one, without its multi-page spec dump."""
  chain, seen = [], set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    chain.append(e)
    e = e.__cause__ or e.__context__
  best = next((x for x in chain if _STATUS.search(str(x))), chain[0])
  text = " ".join(str(best).split("See full TensorStore details")[0].split())
  text = text[_STATUS.search(text).start():] if _STATUS.search(text) else text
  return f"{text[:limit]}{'...' if len(text) > limit else ''}"


@contextlib.contextmanager
def _stderr_kept_on_success(settle_s: float = 0.3):
  """Holds back what is written to stderr (fd 2) while the block runs: replayed if it succeeds,
  dropped if it raises. A failed tensorstore read makes orbax close its event loop while the other
  reads are in flight, and each of those prints an 'Event loop is closed' traceback from a
  background thread; the one-line CheckpointError says what went wrong instead."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    ok = False
    try:
      yield
      ok = True
    finally:
      if not ok:
        time.sleep(settle_s)  # let the late callbacks print into the held file
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      if ok:
        held.seek(0)
        data = held.read()
        if data:
          os.write(2, data)


def _host(tree: Any) -> Any:
  """Replicated device values -> numpy (each process reads its own copy)."""
  return jax.tree_util.tree_map(
      lambda x: np.asarray(x.addressable_data(0) if hasattr(x, "addressable_data") else x), tree)


@jax.jit
def _summary(state: Any, env_stats: Any):
  return (integrity.digests(state), integrity.digests(env_stats),
          integrity.nonfinite_leaves((state, env_stats)))


class Checkpointer:
  """Saves/restores (TrainState, EnvStats) under workdir/checkpoints/<step>, with array digests."""

  ITEMS = ("state", "env_stats", "checksums")

  def __init__(self, workdir: str, keep: int):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self.keep = keep
    self.manager = self._manager()

  def _manager(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True,
                                             enable_async_checkpointing=False),
        item_names=self.ITEMS)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: Any, env_stats: Any) -> None:
    """Saves with each array's digest; refuses a state holding a non-finite value."""
    d_state, d_stats, bad = _host(_summary(state, env_stats))
    bad = {k: int(v) for k, v in bad.items() if v}
    if bad:
      raise CheckpointError(f"refusing to save step {step}: non-finite values in {bad}")
    sums = {"format": 1, "state": {k: v.tolist() for k, v in d_state.items()},
            "env_stats": {k: v.tolist() for k, v in d_stats.items()}}
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     env_stats=ocp.args.StandardSave(env_stats),
                                                     checksums=ocp.args.JsonSave(sums)))
    self.manager.wait_until_finished()

  def restore(self, step: int, abstract_state: Any, abstract_stats: Any, state_shardings: Any,
              stats_shardings: Any):
    """Restores step `step` into the given shardings (each device reads only its own shards) and
    verifies it: every array's digest as saved, every value finite. Raises CheckpointError naming
    what is wrong; returns (state, env_stats, note) where note says when a checkpoint written
    before digests existed could only be checked for finiteness."""
    def target(abstract, shardings):
      return jax.tree_util.tree_map(
          lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    step_dir = os.path.join(self.directory, str(step))
    if not os.path.isdir(step_dir):
      raise CheckpointError(f"checkpoint {step} does not exist (steps: {self.all_steps()})")
    has_sums = os.path.isdir(os.path.join(step_dir, "checksums"))
    args = dict(state=ocp.args.StandardRestore(target(abstract_state, state_shardings)),
                env_stats=ocp.args.StandardRestore(target(abstract_stats, stats_shardings)))
    if has_sums:
      args["checksums"] = ocp.args.JsonRestore()
    try:
      with _stderr_kept_on_success():
        out = self.manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:  # orbax / tensorstore report missing or cut files many ways
      raise CheckpointError(f"checkpoint {step} cannot be read ({_one_line(e)})") from e
    state, stats = out["state"], out["env_stats"]
    d_state, d_stats, bad = _host(_summary(state, stats))
    bad = {k: int(v) for k, v in bad.items() if v}
    if bad:
      names = ", ".join(f"{k} ({v})" for k, v in list(bad.items())[:4])
      raise CheckpointError(f"checkpoint {step} holds {sum(bad.values())} non-finite values in "
                            f"{len(bad)} arrays: {names}{' ...' if len(bad) > 4 else ''}")
    note = None
    if has_sums:
      sums = out["checksums"]
      for item, got in (("state", d_state), ("env_stats", d_stats)):
        want = sums.get(item, {})
        wrong = sorted(k for k in set(got) | set(want)
                       if k not in want or k not in got or list(want[k]) != got[k].tolist())
        if wrong:
          raise CheckpointError(f"checkpoint {step} does not match the digests recorded when it "
                                f"was saved: {item} {wrong[:4]}{' ...' if len(wrong) > 4 else ''}")
    else:
      note = f"checkpoint {step} has no recorded digests (older format): checked for finiteness only"
    return state, stats, note

  def restore_latest(self, abstract_state: Any, abstract_stats: Any, state_shardings: Any,
                     stats_shardings: Any, warn: Callable[[str], None] = print):
    """(step, state, env_stats) of the newest checkpoint that verifies, or None when there is none
    at all. Each newer one that fails is reported through `warn` and listed in
    `self.rejected`; CheckpointError when checkpoints exist but none verifies."""
    self.rejected: list[tuple[int, str]] = []
    for step in reversed(self.all_steps()):
      try:
        state, stats, note = self.restore(step, abstract_state, abstract_stats, state_shardings,
                                          stats_shardings)
      except CheckpointError as e:
        self.rejected.append((step, str(e)))
        warn(f"skipping {e}")
        continue
      if note:
        warn(note)
      return step, state, stats
    if self.rejected:
      raise CheckpointError(
          f"no checkpoint under {self.directory} verifies: "
          + "; ".join(reason for _, reason in self.rejected))
    return None

  def restore_for_inference(self, step: int | None, abstract_state: Any, abstract_stats: Any,
                            state_shardings: Any, stats_shardings: Any,
                            warn: Callable[[str], None] = print):
    """What eval and serving load: checkpoint `step` (verified, no fallback: the user named it)
    or, with step None, the newest one that verifies. Returns (step, state, env_stats), or None
    when there is no checkpoint at all; raises CheckpointError when the one asked for (or every
    one) fails verification."""
    if step is None:
      return self.restore_latest(abstract_state, abstract_stats, state_shardings,
                                 stats_shardings, warn=warn)
    state, stats, note = self.restore(step, abstract_state, abstract_stats, state_shardings,
                                      stats_shardings)
    if note:
      warn(note)
    return step, state, stats

  def set_aside_rejected(self) -> list[str]:
    """Moves the checkpoints `restore_latest` rejected to workdir/checkpoints.rejected/ (kept for
    inspection, never deleted), so the resumed run can save those steps again."""
    moved = []
    if jax.process_index() == 0:
      dest_root = os.path.join(self.workdir, "checkpoints.rejected")
      os.makedirs(dest_root, exist_ok=True)
      for step, _ in getattr(self, "rejected", []):
        src = os.path.join(self.directory, str(step))
        if not os.path.exists(src):
          continue
        dest = os.path.join(dest_root, f"{step}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}")
        shutil.move(src, dest)
        moved.append(dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("checkpoints_set_aside")
    self.manager.close()
    self.manager = self._manager()
    return moved

  def close(self) -> None:
    self.manager.close()


class WorkdirLockedError(RuntimeError):
  """Another live trainer holds the workdir."""


def _start_ticks(pid: int) -> int | None:
  """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _alive(holder: dict) -> bool:
  pid = holder.get("pid")
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # exists, owned by another user
  ticks = holder.get("start_ticks")
  return ticks is None or _start_ticks(pid) in (None, ticks)


class WorkdirLock:
  """An exclusive claim on a workdir for the life of a run: workdir/LOCK holds the holder's host,
  pid and start time. A second trainer is refused with a message naming the holder; a lock left by
  a dead process on this host (killed, crashed) is taken over with a warning. A lock held from
  another host is never broken automatically: this host cannot tell whether that run is alive.
  Created with O_EXCL, and the check-and-take-over runs under a flock of the directory, so two trainers starting
  together cannot both win."""

  FILE = "LOCK"

  def __init__(self, workdir: str):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, self.FILE)
    self.held = False

  @staticmethod
  def describe(holder: dict) -> str:
    when = holder.get("started")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "?"
    return f"pid {holder.get('pid')} on host {holder.get('host')!r}, started {since}"

  def _read(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def acquire(self, warn: Callable[[str], None] = print) -> None:
    os.makedirs(self.workdir, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
          "start_ticks": _start_ticks(os.getpid())}
    guard = os.open(self.workdir, os.O_RDONLY)  # flock on the directory: no extra file
    try:
      fcntl.flock(guard, fcntl.LOCK_EX)
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._read()
        if not holder:
          # a lock file with no readable holder: its writer died between create and write
          warn(f"taking over {self.path}: it names no holder")
        elif holder.get("host") == me["host"] and not _alive(holder):
          warn(f"taking over the lock of a run that is no longer running "
               f"({self.describe(holder)})")
        else:
          raise WorkdirLockedError(
              f"workdir {self.workdir} is in use by another run ({self.describe(holder)}); "
              f"wait for it to end or use another --workdir. If that run is gone (it ran on "
              f"another host), delete {self.path}") from None
        fd = os.open(self.path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self.held = True
      self._me = me
    finally:
      os.close(guard)  # releases the flock

  def release(self) -> None:
    if not self.held:
      return
    self.held = False
    holder = self._read()
    if holder.get("pid") == self._me["pid"] and holder.get("host") == self._me["host"]:
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.path)

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
