"""Pure checks of a state's integrity: non-finite counts and per-array digests (run under jit).

`nonfinite_count` is the train step's guard: it reads the parameters and optimiser state
themselves, so a collapsed policy whose loss reads 0.0 (every minibatch skipped) cannot hide
non-finite weights. `digests` gives each array two 32-bit position-weighted sums of its bit
pattern; checkpoints record them when saving and compare them after restoring, which catches
truncated, missing or flipped data that the storage layer returns without an error. They guard
against corruption, not against an adversary (that would need a cryptographic hash on the host).
Both are reductions that XLA fuses and runs sharded: nothing is gathered to one device.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Odd multipliers: a single flipped bit in word i changes sum(w_i * u_i) by +-2^k * w_i, which is
# never 0 mod 2^32 when w_i is odd; two digests with unrelated weights make cancelling flips rare.
_GOLDEN = np.uint32(0x9E3779B1)


def _words(x: jax.Array) -> jax.Array:
  """uint32[n]: the array's bit pattern, one word per element (narrow types widened)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  size = x.dtype.itemsize
  if size > 4:
    raise TypeError(f"digests: {x.dtype} arrays (64-bit) are not supported")
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[size]
  if x.dtype != unsigned:
    x = jax.lax.bitcast_convert_type(x, unsigned)
  return x.reshape(-1).astype(jnp.uint32)


def digest(x: jax.Array) -> jax.Array:
  """uint32[2]: two position-weighted sums (mod 2^32) of the array's bits."""
  u = _words(x)
  i = jnp.arange(u.shape[0], dtype=jnp.uint32)
  w1 = i * jnp.uint32(2) + jnp.uint32(1)
  w2 = (i * _GOLDEN) | jnp.uint32(1)
  return jnp.stack([jnp.sum(u * w1, dtype=jnp.uint32), jnp.sum(u * w2, dtype=jnp.uint32)])


def _arrays(tree: Any) -> list[tuple[str, jax.Array]]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(jax.tree_util.keystr(p), x) for p, x in flat if hasattr(x, "dtype")]


def digests(tree: Any) -> dict[str, jax.Array]:
  """{leaf path: uint32[2]} for every array leaf of `tree` (pure; jit it)."""
  return {path: digest(x) for path, x in _arrays(tree)}


def nonfinite_count(tree: Any) -> jax.Array:
  """f32[]: how many entries of the floating arrays of `tree` are NaN or infinite (pure)."""
  total = jnp.zeros((), jnp.float32)
  for _, x in _arrays(tree):
    if jnp.issubdtype(x.dtype, jnp.inexact):
      total = total + jnp.sum(~jnp.isfinite(x)).astype(jnp.float32)
  return total


def nonfinite_leaves(tree: Any) -> dict[str, jax.Array]:
  """{leaf path: int32[] count} of non-finite entries per floating array (for error messages)."""
  return {path: jnp.sum(~jnp.isfinite(x)).astype(jnp.int32) for path, x in _arrays(tree)
          if jnp.issubdtype(x.dtype, jnp.inexact)}
