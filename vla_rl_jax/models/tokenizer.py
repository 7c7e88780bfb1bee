"""Instruction tokenizer (bytes, shipped as code: nothing to download) and the action-token layout.

Text ids: 0 = pad, 1 = bos, 2 = eos, 3 + b for byte b (so 259 text ids). Action ids: the LAST
`num_bins` = 256 ids of the vocabulary, as in OpenVLA: the model's action head scores exactly those
ids, and the policy works with the bin index j in [0, 256) of token id V - 256 + j.

Action <-> token mapping (OpenVLA's convention, so real OpenVLA-OFT weights decode the same way):
edges = linspace(-1, 1, 256); an action a is discretised to i = digitize(clip(a), edges) in [1, 256]
and token id V - i, i.e. bin index j = 256 - i. Decoding uses the 255 bin centres:
a = centres[clip(i - 1, 0, 254)].
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

PAD, BOS, EOS = 0, 1, 2
NUM_TEXT_IDS = 259
NUM_BINS = 256
EDGES = np.linspace(-1.0, 1.0, NUM_BINS, dtype=np.float32)
CENTRES = (EDGES[:-1] + EDGES[1:]) / 2.0


def encode(text: str, max_len: int) -> np.ndarray:
  """int32[max_len]: bos, bytes, eos, zero padding. Fails if the text does not fit."""
  ids = [BOS] + [3 + b for b in text.encode("utf-8")] + [EOS]
  if len(ids) > max_len:
    raise ValueError(f"instruction {text!r} needs {len(ids)} tokens > model.max_text_len={max_len}; "
                     f"raise config.model.max_text_len")
  return np.asarray(ids + [PAD] * (max_len - len(ids)), np.int32)


def encode_all(texts: Sequence[str], max_len: int) -> np.ndarray:
  """int32[num_tasks, max_len], the table the rollout indexes with obs["task_id"]."""
  return np.stack([encode(t, max_len) for t in texts])


def actions_to_bins(actions: jnp.ndarray) -> jnp.ndarray:
  """float[..., D] in [-1, 1] -> int32[..., D] bin index j (token id = V - 256 + j)."""
  i = jnp.digitize(jnp.clip(actions, -1.0, 1.0), jnp.asarray(EDGES))  # in [1, 256]
  i = jnp.clip(i, 1, NUM_BINS)
  return (NUM_BINS - i).astype(jnp.int32)


def bins_to_actions(bins: jnp.ndarray) -> jnp.ndarray:
  """int[..., D] bin index j -> float32[..., D] action (bin centre)."""
  i = NUM_BINS - bins
  return jnp.asarray(CENTRES)[jnp.clip(i - 1, 0, NUM_BINS - 2)]


def bins_to_token_ids(bins: jnp.ndarray, vocab_size: int) -> jnp.ndarray:
  return bins + (vocab_size - NUM_BINS)
