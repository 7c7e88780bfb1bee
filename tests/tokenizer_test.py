"""Instruction tokenizers (vla_rl_jax/models/tokenizer.py): the byte tokenizer's ids by hand, the
shipped SentencePiece model on every instruction the repository has, tokenizer.json files, the
prompt templates, start-up errors, and the same ids reaching the rollout's text table and the policy
server."""

import os

import jax
import numpy as np
import pytest

from configs.default import get_config
from envs.tasks import libero_data, pretrain_tasks
from vla_rl_jax import config as config_lib
from vla_rl_jax.builders import build_env, text_table
from vla_rl_jax.models import tokenizer

LIBERO_TEXTS = [t.language for s in libero_data.SUITES for t in libero_data.tasks(s)]


def make_sp(path, vocab_size=259, texts=("put the bowl on the plate",)):
  """A SentencePiece model trained here (bytes + specials when vocab_size=259)."""
  import io
  import sentencepiece as spm
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(list(texts) * 4), model_writer=buf,
                                 vocab_size=vocab_size, model_type="bpe", byte_fallback=True,
                                 unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
                                 normalization_rule_name="identity", minloglevel=2)
  path.write_bytes(buf.getvalue())
  return str(path)


def test_bytes_by_hand():
  tok = tokenizer.get("bytes")
  assert tok.vocab_size == 259
  np.testing.assert_array_equal(tok.encode("go", 6), [1, 3 + ord("g"), 3 + ord("o"), 2, 0, 0])
  np.testing.assert_array_equal(tok.encode("go", 6), tokenizer.encode("go", 6))
  with pytest.raises(ValueError, match="needs 4 tokens > model.max_text_len=3"):
    tok.encode("go", 3)


def test_shipped_tokenizer_round_trips_every_instruction():
  tok = tokenizer.get("libero")
  assert tok.vocab_size == 512
  texts = LIBERO_TEXTS + [t.language for t in pretrain_tasks.pretrain_specs(pretrain_tasks.MAX_TASKS)]
  assert len(texts) == 40 + 64
  n_sp = n_bytes = 0
  for t in texts:
    ids = tok.encode(t, 64)
    n = int((ids != 0).sum())
    assert ids[0] == tokenizer.BOS and np.all(ids[1:n] > 2) and np.all(ids[n:] == 0)
    assert np.all(ids < 512)
    assert tok.decode(ids) == t
    n_sp, n_bytes = n_sp + n, n_bytes + len(t.encode()) + 2
  assert n_sp * 3 < n_bytes            # measured 4.4x fewer tokens than bytes
  # text it was never trained on still encodes (byte fallback), never to the padding id
  odd = "stack the zebra-striped mug on Ünïcode 42"
  ids = tok.encode(odd, 96)
  assert tok.decode(ids) == odd and 0 not in ids[: int((ids != 0).sum())]


def test_openvla_prompt():
  plain, ov = tokenizer.get("libero", "plain"), tokenizer.get("libero", "openvla")
  t = "open the top drawer and put the bowl inside"
  assert ov.decode(ov.encode(t, 48)) == f"In: What action should the robot take to {t}?\nOut:"
  assert plain.decode(plain.encode(t, 48)) == t
  custom = tokenizer.get("bytes", "task: {instruction}.")
  assert custom.decode(custom.encode("go", 16)) == "task: go."
  for bad in ("{task}", "{instruction} {instruction}", "no field", "{instruction"):
    with pytest.raises(tokenizer.TokenizerError, match="model.prompt="):
      tokenizer.get("bytes", bad)


def test_tokenizer_json(tmp_path):
  tokenizers = pytest.importorskip("tokenizers")
  from tokenizers import decoders, models, pre_tokenizers, processors, trainers
  # byte-level BPE (GPT-2's kind): 256 byte symbols + specials + merges, so any text encodes
  tk = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  tk.train_from_iterator(LIBERO_TEXTS, trainers.BpeTrainer(
      vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
  tk.add_special_tokens(["<PAD>"])   # as OpenVLA's: added on top, never produced by a text
  path = str(tmp_path / "tokenizer.json")
  tk.save(path)
  tok = tokenizer.get(path)
  base = tk.get_vocab_size(with_added_tokens=False)
  assert tok.vocab_size == base
  ids = tok.encode(LIBERO_TEXTS[0], 40)
  n = int((ids != 0).sum())
  assert ids[0] == 1 and np.all(ids[1:n] > 2) and n < 30
  assert tok.decode(ids) == LIBERO_TEXTS[0]
  assert base > 256
  # vocabulary check at config validation: text ids + 256 action ids, or exactly OpenVLA's overlap
  c = get_config("variant=tiny")
  c.model.tokenizer = path
  for v, ok in ((base + 255, False), (base + 256, True), (base, True), (base - 1, False)):
    c.model.vocab_size = v
    if ok:
      config_lib.resolve(c, 1)
    else:
      with pytest.raises(config_lib.ConfigError, match=rf"config.model.vocab_size={v}: must be >= "
                         rf"{base + 256} \({base} text ids"):
        config_lib.resolve(c, 1)


def test_errors_at_start_up(tmp_path):
  c = get_config("variant=tiny")
  c.model.tokenizer = str(tmp_path / "missing.model")
  with pytest.raises(config_lib.ConfigError, match=r"model.tokenizer=.*missing.model.*no such file; "
                     r"allowed: 'bytes', 'libero' or a path"):
    config_lib.resolve(c, 1)
  junk = tmp_path / "junk.model"
  junk.write_bytes(b"not a sentencepiece model")
  c.model.tokenizer = str(junk)
  with pytest.raises(config_lib.ConfigError, match="cannot be read as a SentencePiece model"):
    config_lib.resolve(c, 1)
  c.model.tokenizer = "libero"      # 512 text ids: tiny's 515-row vocabulary is too small
  with pytest.raises(config_lib.ConfigError, match=r"model.vocab_size=515: must be >= 768"):
    config_lib.resolve(c, 1)
  c.model.tokenizer, c.model.prompt = "bytes", "{goal}"
  with pytest.raises(config_lib.ConfigError, match=r"model.prompt='\{goal\}'"):
    config_lib.resolve(c, 1)


def test_same_ids_in_rollout_table_and_server(tmp_path):
  """A file tokenizer's ids reach the policy alike through the rollout's text table and the policy
  server (tiny model, the fake task; the SFT dataset calls the same tokenizer.for_model)."""
  from vla_rl_jax import serving
  from vla_rl_jax.builders import build
  c = get_config("variant=tiny")
  c.model.tokenizer = make_sp(tmp_path / "sp.model", 259 + 40,
                              texts=["reach the red target", "reach the blue target"])
  c.model.prompt = "openvla"
  c.model.max_text_len, c.model.vocab_size = 64, 299 + 256
  cfg = config_lib.resolve(c, jax.device_count())
  env = build_env(cfg)
  tok = tokenizer.for_model(cfg.model)
  table = np.asarray(text_table(cfg, env))
  np.testing.assert_array_equal(table, tok.encode_all(env.instructions, 64))
  assert tok.decode(table[0]).startswith("In: What action should the robot take to reach the ")
  b = build(cfg)
  state, _ = b.init_fn()
  server = serving.PolicyServer(b, state.params)
  np.testing.assert_array_equal(server._texts({"instruction": env.instructions[1]}, 1)[0],  # noqa: SLF001
                                table[1])
  reply = server.handle({"image": np.zeros((32, 32, 3), np.uint8),
                         "instruction": "reach " * 40})
  assert "needs" in reply["error"] and "max_text_len=64" in reply["error"]
