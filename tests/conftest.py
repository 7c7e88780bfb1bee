"""Test setup: CPU only, 8 fake devices, persistent compilation cache (set before jax initialises)."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.dirname(os.path.dirname(__file__)), ".cache", "jax"))

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import pytest  # noqa: E402

# `make test` runs two pytest-xdist workers with `--dist loadgroup`. A test module's tests share
# module-scoped compiled fixtures, so each module is one group (built once, on one worker); the
# LIBERO suites are a group each, so that their four scene compilations run in parallel. Groups
# are handed out in collection order: the ones that take minutes go first, so the short ones fill
# in behind them rather than leave one worker running a long group alone at the end.
_LONG_FIRST = ("libero_suite_test", "task_test", "libero_spine_test", "experts_test",
               "grasp_contact_test", "learning_test", "render_test", "distributed_test")


def _group(item) -> str:
  name = item.module.__name__.rsplit(".", 1)[-1]
  params = getattr(getattr(item, "callspec", None), "params", {})
  return f"{name}:{params['suite_run']}" if "suite_run" in params else name


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if not item.get_closest_marker("xdist_group"):
      item.add_marker(pytest.mark.xdist_group(_group(item)))

  def rank(item):
    name = _group(item).split(":")[0]
    return _LONG_FIRST.index(name) if name in _LONG_FIRST else len(_LONG_FIRST)
  items.sort(key=rank)   # stable: the order inside a module is kept
