"""Pure, jittable environments (brax Env/State contract); never imports vla_rl_jax."""

import contextlib as _contextlib
import io as _io

# mujoco.mjx prints "Failed to import warp: ..." and "Failed to import mujoco_warp: ..." to stdout
# when it is imported without NVIDIA Warp (an optional GPU backend we do not use), which corrupts
# the JSON our launchers write to stdout. Import it once here, before any env module does, with
# those two lines dropped and anything else it prints passed on.
_held = _io.StringIO()
with _contextlib.redirect_stdout(_held):
  import mujoco.mjx.warp  # noqa: F401,E402
for _line in _held.getvalue().splitlines():
  if not _line.startswith(("Failed to import warp:", "Failed to import mujoco_warp:")):
    print(_line)
del _held
