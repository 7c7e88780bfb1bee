"""Instruction tokenizers (nothing downloaded: built in, shipped, or a file the user has) and the
action-token layout.

`model.tokenizer` picks the tokenizer; `model.prompt` the text around the instruction: "plain" (the
instruction alone), "openvla" (OPENVLA_PROMPT, what OpenVLA's weights were trained on) or a template
holding "{instruction}". Tokenizers:
- "bytes" (tiny's default): ids 0 = pad, 1 = bos, 2 = eos, 3 + b for byte b (259 text ids), as code;
- "libero": the SentencePiece model shipped in vla_rl_jax/assets/tokenizers/libero_sp.model (BPE,
  512 pieces with byte fallback, unk 0 / bos 1 / eos 2 like Llama-2's), trained by
  `python tools/make_tokenizer.py` on the repository's own task instructions and prompts; the
  default of the small, base and 7b variants (about 4x fewer tokens than bytes on LIBERO);
- a path to a SentencePiece `.model` or a Hugging Face `tokenizer.json` (an imported OpenVLA-OFT
  checkpoint's: launch.import_openvla_oft sets it, with prompt "openvla").
Every tokenizer encodes bos + the prompt's pieces (no eos for file tokenizers: OpenVLA's prompt ends
at "Out:"), padded with id 0, which every model reads as padding (Llama-2's <unk>; a text that
encodes to id 0 is an error). Text ids must lie below vocab_size; the last 256 ids of the vocabulary
are the action bins (OpenVLA overwrites Llama's last 256 text ids with them, which config validation
allows when the text vocabulary fills the model's exactly).

Action <-> token mapping (OpenVLA's convention, so real OpenVLA-OFT weights decode the same way):
edges = linspace(-1, 1, 256); an action a is discretised to i = digitize(clip(a), edges) in [1, 256]
and token id V - i, i.e. bin index j = 256 - i. Decoding uses the 255 bin centres:
a = centres[clip(i - 1, 0, 254)].
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np

PAD, BOS, EOS = 0, 1, 2
NUM_TEXT_IDS = 259
NUM_BINS = 256
EDGES = np.linspace(-1.0, 1.0, NUM_BINS, dtype=np.float32)
CENTRES = (EDGES[:-1] + EDGES[1:]) / 2.0

ASSET_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                         "tokenizers")
SHIPPED = {"libero": "libero_sp.model"}   # name -> file in ASSET_DIR
# OpenVLA's prompt (prismatic's PurePromptBuilder for openvla): what its 7B weights were trained on
OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
PROMPTS = {"plain": "{instruction}", "openvla": OPENVLA_PROMPT}   # model.prompt's named templates
ALLOWED = ("'bytes', " + ", ".join(repr(k) for k in SHIPPED)
           + " or a path to a SentencePiece .model or a tokenizer.json")


class TokenizerError(ValueError):
  """A tokenizer that cannot be loaded or used; the message names model.tokenizer / model.prompt."""


def _pad(ids: list[int], text: str, max_len: int) -> np.ndarray:
  if len(ids) > max_len:
    raise ValueError(f"instruction {text!r} needs {len(ids)} tokens > model.max_text_len={max_len}; "
                     f"raise config.model.max_text_len")
  return np.asarray(ids + [PAD] * (max_len - len(ids)), np.int32)


def encode(text: str, max_len: int) -> np.ndarray:
  """The byte tokenizer: int32[max_len]: bos, bytes, eos, zero padding. Fails if the text does not
  fit."""
  return _pad([BOS] + [3 + b for b in text.encode("utf-8")] + [EOS], text, max_len)


def encode_all(texts: Sequence[str], max_len: int) -> np.ndarray:
  """The byte tokenizer's int32[num_tasks, max_len] table (see Tokenizer.encode_all)."""
  return np.stack([encode(t, max_len) for t in texts])


class Tokenizer:
  """name, vocab_size (text ids, specials included), prompt; encode / encode_all / decode."""

  def __init__(self, name: str, vocab_size: int, prompt: str = "{instruction}"):
    self.name, self.vocab_size, self.prompt = name, int(vocab_size), prompt

  def _ids(self, text: str) -> list[int]:
    raise NotImplementedError

  def decode(self, ids: Sequence[int]) -> str:
    raise NotImplementedError

  def encode(self, instruction: str, max_len: int) -> np.ndarray:
    """int32[max_len]: the prompt around `instruction`, tokenized, zero padded; ValueError when it
    does not fit max_len or encodes to the padding id."""
    text = self.prompt.format(instruction=instruction)
    ids = [int(i) for i in self._ids(text)]
    if PAD in ids[1:] or (ids and ids[0] == PAD):
      raise ValueError(f"model.tokenizer={self.name!r} encodes {text!r} with id {PAD}, which every "
                       f"model reads as padding (an unknown piece: use a tokenizer with byte "
                       f"fallback)")
    if max(ids, default=0) >= self.vocab_size:
      raise ValueError(f"model.tokenizer={self.name!r} encodes {text!r} with id {max(ids)} >= its "
                       f"vocabulary size {self.vocab_size}")
    return _pad(ids, text, max_len)

  def encode_all(self, instructions: Sequence[str], max_len: int) -> np.ndarray:
    """int32[num_tasks, max_len], the table the rollout indexes with obs["task_id"]."""
    return np.stack([self.encode(t, max_len) for t in instructions])


class ByteTokenizer(Tokenizer):
  def __init__(self, prompt: str = "{instruction}"):
    super().__init__("bytes", NUM_TEXT_IDS, prompt)

  def _ids(self, text):
    return [BOS] + [3 + b for b in text.encode("utf-8")] + [EOS]

  def decode(self, ids):
    return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", errors="replace")


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model file (Llama-2's tokenizer.model, or the shipped one): bos + pieces."""

  def __init__(self, path: str, name: str, prompt: str = "{instruction}"):
    import sentencepiece  # noqa: PLC0415
    self._sp = sentencepiece.SentencePieceProcessor(model_file=path)
    super().__init__(name, self._sp.get_piece_size(), prompt)
    self._bos = self._sp.bos_id()

  def _ids(self, text):
    return ([self._bos] if self._bos >= 0 else []) + list(self._sp.encode(text))

  def decode(self, ids):
    return self._sp.decode([int(i) for i in ids if i != PAD])


class JsonTokenizer(Tokenizer):
  """A Hugging Face tokenizer.json: its own special-token post-processing (Llama's adds bos)."""

  def __init__(self, path: str, name: str, prompt: str = "{instruction}"):
    import tokenizers  # noqa: PLC0415
    self._tok = tokenizers.Tokenizer.from_file(path)
    # the base vocabulary: tokens added on top (OpenVLA's <PAD> = 32000) never come out of a text
    super().__init__(name, self._tok.get_vocab_size(with_added_tokens=False), prompt)

  def _ids(self, text):
    return self._tok.encode(text, add_special_tokens=True).ids

  def decode(self, ids):
    return self._tok.decode([int(i) for i in ids if i != PAD])


def template(prompt: str) -> str:
  """model.prompt -> its template: a name in PROMPTS, or a template itself; TokenizerError unless
  the template holds '{instruction}' once and no other {field}."""
  import string  # noqa: PLC0415
  if prompt in PROMPTS:
    return PROMPTS[prompt]
  try:
    fields = [f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None]
  except ValueError as e:
    raise TokenizerError(f"model.prompt={prompt!r}: {e} (write literal braces as {{{{ }}}})") from None
  if fields != ["instruction"]:
    raise TokenizerError(f"model.prompt={prompt!r}: one of {sorted(PROMPTS)} or a template holding "
                         f"'{{instruction}}' exactly once and no other {{field}} (has {fields})")
  return prompt


@functools.lru_cache(maxsize=16)
def get(name: str, prompt: str = "plain") -> Tokenizer:
  """The tokenizer `model.tokenizer` names with `model.prompt`'s template (see the module
  docstring); TokenizerError naming the field and what is allowed when it cannot be loaded."""
  prompt = template(prompt)
  if name == "bytes":
    return ByteTokenizer(prompt)
  path = os.path.join(ASSET_DIR, SHIPPED[name]) if name in SHIPPED else os.path.expanduser(name)
  if not os.path.isfile(path):
    raise TokenizerError(f"model.tokenizer={name!r}: no such file; allowed: {ALLOWED}")
  try:
    if path.endswith(".json"):
      return JsonTokenizer(path, name, prompt)
    return SentencePieceTokenizer(path, name, prompt)
  except ImportError as e:
    raise TokenizerError(f"model.tokenizer={name!r} needs the {e.name!r} package (in "
                         f"requirements.txt): pip install -r requirements.txt") from None
  except Exception as e:  # noqa: BLE001  (the libraries raise RuntimeError / OSError / Exception)
    raise TokenizerError(f"model.tokenizer={name!r}: cannot be read as a "
                         f"{'tokenizer.json' if path.endswith('.json') else 'SentencePiece model'}"
                         f" ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         f"allowed: {ALLOWED}") from None


def for_model(model_cfg) -> Tokenizer:
  """The tokenizer of a config's model section (model.tokenizer, model.prompt)."""
  return get(model_cfg.tokenizer, model_cfg.prompt)


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
