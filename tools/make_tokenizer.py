"""Trains the SentencePiece tokenizer that ships as model.tokenizer="libero"
(vla_rl_jax/assets/tokenizers/libero_sp.model). Run by hand when the task set changes; never at run
time, and nothing is downloaded:

  .venv/bin/python tools/make_tokenizer.py [--vocab_size=512] [--out=vla_rl_jax/assets/tokenizers]

The corpus is this repository's own instructions: the 40 LIBERO tasks (envs/tasks/data), every
procedural pretraining task (envs/tasks/pretrain_tasks.py), the fake task's colours, each inside both
prompts (the bare instruction and OpenVLA's). BPE with byte fallback (any text encodes: unknown
characters become byte pieces, never id 0), ids unk 0 / bos 1 / eos 2 as Llama-2's tokenizer, no
padding piece (id 0 is read as padding by the models), digits split.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def corpus() -> list[str]:
  from envs.fake import COLOURS  # noqa: PLC0415
  from envs.tasks import libero_data, pretrain_tasks  # noqa: PLC0415
  from vla_rl_jax.models.tokenizer import OPENVLA_PROMPT  # noqa: PLC0415
  texts = [t.language for s in libero_data.SUITES for t in libero_data.tasks(s)]
  texts += [t.language for t in pretrain_tasks.pretrain_specs(pretrain_tasks.MAX_TASKS)]
  texts += [f"reach the {c} target" for c in COLOURS]
  return sorted(set(texts)) + sorted({OPENVLA_PROMPT.format(instruction=t) for t in texts})


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--vocab_size", type=int, default=512)
  ap.add_argument("--out", default=os.path.join("vla_rl_jax", "assets", "tokenizers"))
  args = ap.parse_args()
  import sentencepiece as spm  # noqa: PLC0415
  texts = corpus()
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=args.vocab_size,
      model_type="bpe", byte_fallback=True, character_coverage=1.0, split_digits=True,
      unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
      normalization_rule_name="identity", num_threads=1, minloglevel=2)
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "libero_sp.model")
  with open(path, "wb") as f:
    f.write(model.getvalue())
  sp = spm.SentencePieceProcessor(model_file=path)
  n = [len(sp.encode(t)) for t in texts]
  print(f"wrote {path}: {sp.get_piece_size()} pieces, {len(texts)} training texts, "
        f"tokens per text {min(n)}-{max(n)} (bytes: {max(len(t.encode()) for t in texts)} max)")


if __name__ == "__main__":
  main()
