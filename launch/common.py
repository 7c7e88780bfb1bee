"""What the entry points share: one-line errors without a traceback, envs built from their presets."""

from __future__ import annotations

import difflib
import importlib.util
import sys
from typing import Any, Sequence


def fail(prog: str, msg: str) -> None:
  """Prints `prog: msg` to stderr and exits with status 2 (a usage error, no traceback)."""
  print(f"{prog}: {msg}", file=sys.stderr)
  raise SystemExit(2)


def check_workdir(prog: str, workdir: str) -> None:
  """A run's --workdir: a directory (created if missing) that this user can write."""
  import os  # noqa: PLC0415
  if not workdir.strip() or (os.path.exists(workdir) and not os.path.isdir(workdir)):
    fail(prog, f"--workdir={workdir}: must name a directory (created if missing)")
  existing = workdir
  while not os.path.exists(existing):  # the directory, or the nearest parent that exists
    existing = os.path.dirname(os.path.abspath(existing))
  if not os.access(existing, os.W_OK | os.X_OK):
    fail(prog, f"--workdir={workdir}: {existing} is not writable by this user")


def run_or_exit(prog: str, debug: bool, fn, run_errors: tuple, usage_errors: tuple):
  """fn(), with its expected failures as one line on stderr and no traceback (--debug: raised):
  `run_errors` (the run cannot go on as configured) exit 1, `usage_errors` (bad config) exit 2."""
  try:
    return fn()
  except run_errors as e:
    if debug:
      raise
    print(f"{prog}: {e}", file=sys.stderr, flush=True)
    raise SystemExit(1) from None
  except usage_errors as e:
    if debug:
      raise
    fail(prog, str(e))


def one_line(msg: str) -> str:
  """An error message as one line; a message that carries a traceback (ml_collections wraps the
  config file's exception in one) is reduced to its last line, the exception itself."""
  lines = [ln.strip() for ln in str(msg).strip().splitlines() if ln.strip()]
  if any(ln.startswith("Traceback") for ln in lines):
    head = lines[0].split(":")[0] + ": " if lines[0].startswith("flag --") else ""
    return head + lines[-1]
  return " ".join(lines)


def parse_flags(prog: str):
  """An absl `app.run(flags_parser=...)`: a bad flag, config file argument or `--config.X=...`
  override ends the program with one line on stderr (status 2), not a traceback; an override of a
  field the config does not hold names the flag and the closest field."""
  def parse(argv: list[str]) -> list[str]:
    from absl import flags  # noqa: PLC0415
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      fail(prog, one_line(str(e)))
    except (AttributeError, KeyError, TypeError, ValueError) as e:   # ml_collections' overrides
      fail(prog, _override_error(argv, e))
    except OSError as e:   # ml_collections could not read the --config file
      fail(prog, f"--config={_config_arg(argv)}: cannot load the config file "
                 f"({one_line(str(e)).split('  ')[-1].strip()})")
  return parse


def loaded_config(prog: str, holder: Any) -> Any:
  """The --config flag's ConfigDict, loaded now: ml_collections loads the file lazily, on first
  use, so a missing or broken file would otherwise be a traceback from deep inside the run."""
  try:
    config = holder.value
    config.keys()
  except OSError as e:
    why = one_line(str(e))
    fail(prog, f"--config={_config_arg(sys.argv)}: cannot load the config file "
               f"({why[why.find('[Errno'):] if '[Errno' in why else why})")
  except Exception as e:  # noqa: BLE001  (the config file's own error, e.g. a bad ARG)
    fail(prog, f"--config={_config_arg(sys.argv)}: {one_line(str(e))}")
  return config


def _config_arg(argv: Sequence[str]) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _load_config(argv: Sequence[str]) -> Any:
  """The ConfigDict `--config=FILE.py[:ARG]` names (as ml_collections loads it), or None."""
  spec = _config_arg(argv)
  if not spec:
    return None
  path, _, arg = spec.partition(":")
  try:
    mod_spec = importlib.util.spec_from_file_location("_launch_config", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except Exception:  # noqa: BLE001  (only a better message is lost)
    return None


def _override_error(argv: Sequence[str], err: Exception) -> str:
  """'--config.rl.grop_size=8: config.rl has no field 'grop_size'; did you mean 'group_size'?'"""
  cfg = _load_config(argv)
  for a in argv[1:]:
    if not a.startswith("--config."):
      continue
    node, where = cfg, "config"
    for key in a[2:].split("=", 1)[0].split(".")[1:]:
      if node is None or not hasattr(node, "keys"):
        break
      if key not in node:
        close = difflib.get_close_matches(key, list(node.keys()), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"its fields: {sorted(node.keys())}"
        return f"{a}: {where} has no field {key!r}; {hint}"
      node, where = node[key], f"{where}.{key}"
  return one_line(str(err).replace("\\n", " ").replace("\\'", "'"))


def preset_env(prog: str, name: str, *, image_size: int, cameras: Sequence[str],
               task_ids: Sequence[str] | None = None, episode_length: int | None = None,
               env_flag: str = "env"):
  """(env, its constructor kwargs, episode length) for a registered env with its preset's options
  (configs/default.py ENV_PRESETS), optionally restricted to some task ids of a suite."""
  from configs.default import ENV_PRESETS  # noqa: PLC0415
  from envs import registry  # noqa: PLC0415
  from envs import schema  # noqa: PLC0415
  if name not in registry.names():
    fail(prog, f"--{env_flag}={name}: unknown env; registered envs: {list(registry.names())}")
  preset = ENV_PRESETS.get(name, {})
  kwargs = dict(preset.get("kwargs", {}))
  if task_ids:
    kwargs["task_ids"] = parse_task_ids(prog, task_ids, name)
  horizon = episode_length or preset.get("episode_length")
  if not horizon:
    fail(prog, f"--episode_length is needed: env {name!r} has no preset")
  declared = registry.cameras(name)
  if declared is not None and any(c not in declared for c in cameras):
    fail(prog, f"--cameras={','.join(cameras)}: env {name!r} has cameras {list(declared)}")
  try:
    env = registry.make(name, image_size=image_size, cameras=tuple(cameras), **kwargs)
  except schema.OptionError as e:
    fail(prog, f"env {name!r}: {e}")
  except ValueError as e:
    fail(prog, one_line(str(e)))
  return env, kwargs, horizon


def parse_task_ids(prog: str, task_ids: Sequence[str], name: str) -> list[int]:
  """--task_ids=3,0 -> [3, 0], checked by env `name`'s declared task_ids option."""
  from envs import registry  # noqa: PLC0415
  from envs import schema  # noqa: PLC0415
  flag = f"--task_ids={','.join(task_ids)}"
  try:
    ids = [int(t) for t in task_ids]
  except ValueError:
    fail(prog, f"{flag}: give integers")
  options = registry.kwargs_schema(name)
  if options is not None and "task_ids" not in options.names:
    fail(prog, f"{flag}: env {name!r} has no task ids to choose (a LIBERO suite has)")
  try:
    registry.check_kwargs(name, {"task_ids": ids})
  except schema.OptionError as e:
    fail(prog, f"{flag}: {e.allowed}")
  return ids
