"""The loss and advantage registries: name -> function and its declared hyperparameters.

    @register_loss("my_loss", schema.Float("beta", 0.1, "weight of ...", lo=0.0))
    def my_loss(inp: LossInputs, cfg: RLConfig, *, beta: float) -> (loss, metrics): ...

    @register_advantage("my_adv")
    def my_adv(rewards: f32[B, G], eps: float, weight: f32[B, G] | None = None) -> f32[B, G]: ...

These registries are the one source of truth: config validation (vla_rl_jax.config.resolve) accepts
exactly the names registered when it runs, so a loss registered in a notebook or a test module before
`resolve` is as valid as a built-in one. Hyperparameters are envs.schema options (the same checks as
env options): set from flags as `--config.rl.loss_kwargs.NAME=VALUE` (advantages:
`rl.advantage_kwargs`), checked at start-up with every declared one filled in at its default, kept
in the frozen RLConfig as sorted (name, value) pairs and passed to the function as keyword arguments.

An option name means one thing across registered functions: two losses may share an option (the
clipped losses share `ratio_level` and `dual_clip`) only with the same default, so that
configs/default.py can pre-fill `rl.loss_kwargs` with every registered option (a locked ConfigDict
only takes flag overrides of fields it holds) and validation can ignore the pre-filled options the
chosen loss does not declare.

This module imports no JAX; the built-in losses and advantages register themselves when
vla_rl_jax.rl.losses / vla_rl_jax.rl.advantages are imported, which every lookup here does first.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any, Callable, Mapping

from envs import schema as schema_lib

_BUILTIN = {"loss": "vla_rl_jax.rl.losses", "advantage": "vla_rl_jax.rl.advantages"}


@dataclasses.dataclass(frozen=True)
class Entry:
  """A registered function and its hyperparameters (an envs.schema.Schema without cameras)."""
  kind: str            # "loss" | "advantage"
  name: str
  fn: Callable[..., Any]
  schema: schema_lib.Schema

  def check(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared option, validated and normalised (defaults filled); raises
    envs.schema.OptionError naming the option (an unknown one with a "did you mean")."""
    return self.schema.check(kwargs, python=False, owner=f"{self.kind} {self.name!r}")


_REGISTRY: dict[str, dict[str, Entry]] = {"loss": {}, "advantage": {}}


def _register(kind: str, name: str, options: tuple[schema_lib.Option, ...],
              rules: tuple[schema_lib.Rule, ...], replace: bool):
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f"register_{kind}({name!r}): the name must be an identifier (it is a config "
                     f"word: --config.rl.{kind}=NAME)")
  bad = [o for o in options if not isinstance(o, schema_lib.Option)]
  if bad:
    raise TypeError(f"register_{kind}({name!r}): options must be envs.schema options "
                    f"(Float, Int, Bool, Choice), not {bad}")
  schema = schema_lib.Schema(options=tuple(options), rules=tuple(rules))

  def wrap(fn):
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    missing = [o.name for o in options if not takes_any and o.name not in params]
    if missing:
      raise TypeError(f"register_{kind}({name!r}): {fn.__qualname__} does not take the declared "
                      f"option(s) {missing} as keyword arguments")
    table = _REGISTRY[kind]
    old = table.get(name)
    same_source = old is not None and (old.fn.__module__, old.fn.__qualname__) == (
        fn.__module__, fn.__qualname__)
    if old is not None and not (replace or same_source):  # a re-run notebook cell is the same source
      raise ValueError(f"{kind} {name!r} is already registered by {old.fn.__module__}."
                       f"{old.fn.__qualname__}; pass replace=True to replace it")
    for other in table.values():
      if other.name == name:
        continue
      for o in options:
        theirs = {p.name: p for p in other.schema.options}.get(o.name)
        if theirs is not None and (type(theirs), theirs.default) != (type(o), o.default):
          raise ValueError(f"register_{kind}({name!r}): option {o.name!r} is declared by {kind} "
                           f"{other.name!r} as {type(theirs).__name__} with default "
                           f"{theirs.default!r}; a shared option name must keep its type and "
                           f"default (rl.{kind}_kwargs is pre-filled once for every {kind})")
    table[name] = Entry(kind, name, fn, schema)
    return fn
  return wrap


def register_loss(name: str, *options: schema_lib.Option, rules: tuple[schema_lib.Rule, ...] = (),
                  replace: bool = False):
  """Decorator: registers `fn(inp: LossInputs, cfg: RLConfig, **options) -> (loss, metrics)` as
  `--config.rl.loss=NAME`, with hyperparameters `options` (`--config.rl.loss_kwargs.X=...`).
  `rules` are cross-option checks (each raises envs.schema.OptionError naming an option)."""
  return _register("loss", name, options, rules, replace)


def register_advantage(name: str, *options: schema_lib.Option,
                       rules: tuple[schema_lib.Rule, ...] = (), replace: bool = False):
  """Decorator: registers `fn(rewards f32[B, G], eps, weight f32[B, G] | None, **options) ->
  advantages f32[B, G]` as `--config.rl.advantage=NAME` (options: `rl.advantage_kwargs`)."""
  return _register("advantage", name, options, rules, replace)


def _table(kind: str) -> dict[str, Entry]:
  importlib.import_module(_BUILTIN[kind])  # the built-ins register on import
  return _REGISTRY[kind]


def names(kind: str) -> tuple[str, ...]:
  """Registered names of `kind` ("loss" or "advantage"), sorted."""
  return tuple(sorted(_table(kind)))


def get(kind: str, name: str) -> Entry:
  table = _table(kind)
  if name not in table:
    raise KeyError(f"unknown {kind} {name!r}; registered: {sorted(table)}")
  return table[name]


def prefill(kind: str) -> dict[str, Any]:
  """Every option any registered `kind` declares, at its (shared) default: configs/default.py's
  rl.loss_kwargs / rl.advantage_kwargs, so any of them can be set by flag."""
  out: dict[str, Any] = {}
  for entry in _table(kind).values():
    out.update(entry.schema.defaults())
  return out


def resolve_options(kind: str, name: str, given: Mapping[str, Any]) -> dict[str, Any]:
  """The options of `kind` `name` from a config's `rl.{kind}_kwargs`, every declared one filled.

  An option that `name` does not declare is dropped when another registered `kind` declares it with
  that very default (the pre-fill of configs/default.py); otherwise it is an error: options of a
  different `kind` set to a value (they would be silently ignored) and names no one declares (with a
  "did you mean"). Raises envs.schema.OptionError naming the option.
  """
  entry = get(kind, name)
  declared = set(entry.schema.names)
  others = {}
  for other in _table(kind).values():
    for o in other.schema.options:
      others.setdefault(o.name, (o, []))[1].append(other.name)
  kept = {}
  for k, v in given.items():
    if k in declared:
      kept[k] = v
    elif k in others:
      opt, owners = others[k]
      if v != opt.default:
        takes = sorted(declared) or "no options"
        raise schema_lib.OptionError(
            k, v, f"not an option of {kind} {name!r} (it is of {sorted(owners)}); {name!r} takes "
            f"{takes}")
    else:
      raise schema_lib.OptionError(
          k, v, schema_lib.unknown_message(k, sorted(declared), f"{kind} {name!r}"))
  return entry.check(kept)
