"""Options as data (name, type, default, allowed values, doc): one check for flags and Python.

Env constructors declare them, and so do the RL registries (vla_rl_jax.rl.registry: a loss's or an
advantage's hyperparameters, `--config.rl.loss_kwargs.NAME=value`).

Each registered env declares a `Schema` next to its constructor and attaches it to its registry
factory (`@declares(SCHEMA)`); `envs.registry.check_kwargs` and the constructors both validate
through it, so `--config.env.kwargs.radius=-1` and `FakeReach(radius=-1)` fail with the same line:
`radius=-1.0: must be > 0`. Options are flat scalars or tuples of ints, so every one of them can be
set from a flag and survives the resolved config's JSON round trip. `python_only` names (e.g.
`render_kwargs`, a dict of renderer internals) pass through from Python and are refused in configs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from typing import Any, Callable, Mapping, Sequence


class OptionError(ValueError):
  """An env option is invalid: `name`, the `value` given and what is `allowed` (one line)."""

  def __init__(self, name: str, value: Any, allowed: str):
    self.name, self.value, self.allowed = name, value, allowed
    super().__init__(f"{name}={value!r}: {allowed}")


def _interval(lo, hi, lo_open, hi_open) -> str:
  if hi is None:
    return f"must be {'>' if lo_open else '>='} {lo}"
  if lo is None:
    return f"must be {'<' if hi_open else '<='} {hi}"
  return f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


@dataclasses.dataclass(frozen=True)
class Option:
  """One constructor option; subclasses say which values are allowed."""
  name: str
  default: Any
  doc: str

  def check(self, value: Any) -> Any:
    """The value, normalised (float(), tuple()), or OptionError naming this option."""
    raise NotImplementedError

  def fail(self, value: Any, allowed: str):
    raise OptionError(self.name, value, allowed)


@dataclasses.dataclass(frozen=True)
class Float(Option):
  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False
  hi_open: bool = False

  def check(self, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      self.fail(value, "must be a number")
    v = float(value)
    if not math.isfinite(v):
      self.fail(value, "must be a finite number")
    if ((self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)))
        or (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))):
      self.fail(v, _interval(self.lo, self.hi, self.lo_open, self.hi_open))
    return v


@dataclasses.dataclass(frozen=True)
class Int(Option):
  lo: int | None = None
  hi: int | None = None

  def check(self, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
      self.fail(value, "must be an integer")
    v = int(value)
    if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
      self.fail(v, _interval(self.lo, self.hi, False, False))
    return v


@dataclasses.dataclass(frozen=True)
class Bool(Option):

  def check(self, value: Any) -> bool:
    if not isinstance(value, bool):
      self.fail(value, "must be True or False")
    return value


@dataclasses.dataclass(frozen=True)
class Choice(Option):
  choices: tuple[str, ...] = ()
  # (value, why) for values a user may expect that are not offered: the error says why
  refused: tuple[tuple[str, str], ...] = ()

  def check(self, value: Any) -> str:
    if value not in self.choices:
      why = dict(self.refused).get(value) if isinstance(value, str) else None
      self.fail(value, (f"{why}; " if why else "") + f"choose one of {list(self.choices)}")
    return value


@dataclasses.dataclass(frozen=True)
class IntTuple(Option):
  """Distinct integers in [lo, hi]; () usually means "all" (the doc says)."""
  lo: int = 0
  hi: int | None = None

  def check(self, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
      self.fail(value, "must be a tuple of integers")
    if any(isinstance(x, bool) or not isinstance(x, numbers.Integral) for x in value):
      self.fail(value, "must be a tuple of integers")
    v = tuple(int(x) for x in value)
    bad = [x for x in v if x < self.lo or (self.hi is not None and x > self.hi)]
    if bad:
      self.fail(v, f"each must be in [{self.lo}, {self.hi}] (not {bad})")
    if len(set(v)) != len(v):
      self.fail(v, "each at most once")
    return v


Rule = Callable[[dict], None]   # a check across options (raises OptionError naming one of them)


@dataclasses.dataclass(frozen=True)
class Schema:
  """An env's (or a loss's) options; `cameras` the camera names an env can render; `rules`
  cross-option checks."""
  options: tuple[Option, ...]
  cameras: tuple[str, ...] = ()
  rules: tuple[Rule, ...] = ()
  python_only: tuple[str, ...] = ()

  def __post_init__(self):
    names = [o.name for o in self.options]
    if len(set(names)) != len(names):
      raise ValueError(f"duplicate option names in {names}")
    for o in self.options:   # the declared default must itself be allowed
      o.check(o.default)

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(o.name for o in self.options)

  def defaults(self) -> dict[str, Any]:
    return {o.name: o.default for o in self.options}

  def check(self, kwargs: Mapping[str, Any], env: str = "", *, python: bool = True,
            fill: bool = True, owner: str | None = None) -> dict[str, Any]:
    """Validated, normalised options: every declared one (defaults filled) unless fill=False, plus
    the python_only ones given (refused with python=False: a config cannot carry them).
    owner: what errors call the holder of the options (default "env 'ENV'")."""
    owner = owner or f"env {env!r}"
    by_name = {o.name: o for o in self.options}
    out = self.defaults() if fill else {}
    for k, v in kwargs.items():
      if k in self.python_only:
        if not python:
          raise OptionError(k, v, f"{owner} takes this option from Python only "
                            f"(not settable from a config or flag)")
        out[k] = v
        continue
      if k not in by_name:
        raise OptionError(k, v, unknown_message(k, self.names, owner))
      out[k] = by_name[k].check(v)
    if fill:
      for rule in self.rules:
        rule(out)
    return out

  def check_cameras(self, cameras: Sequence[str], env: str = "") -> tuple[str, ...]:
    cams = tuple(cameras)
    bad = [c for c in cams if c not in self.cameras]
    if bad:
      raise OptionError("cameras", cams, f"env {env!r} has cameras {list(self.cameras)}; "
                        f"{bad} {'is' if len(bad) == 1 else 'are'} not one of them")
    return cams


def unknown_message(name: str, known: Sequence[str], owner: str) -> str:
  """"unknown option of OWNER; did you mean 'x'? known: [...]" (the suggestion when one is close)."""
  close = difflib.get_close_matches(name, list(known), n=1)
  hint = f"did you mean {close[0]!r}? " if close else ""
  return f"unknown option of {owner}; {hint}known: {sorted(known)}"


def declares(schema: Schema):
  """Attaches `schema` to a registry factory (envs.registry.kwargs_schema reads it)."""
  def wrap(fn):
    fn.schema = schema
    return fn
  return wrap
