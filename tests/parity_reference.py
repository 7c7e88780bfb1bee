"""The torch side of `make test-parity` (run by .venv-parity's Python, never imported by the suite).

Builds tiny RANDOM models from the reference architecture definitions: timm VisionTransformers
configured as SigLIP (no class token, tanh GELU, MAP attention-pool head) and as DINOv2-reg4 (class
token, 4 register tokens without position embedding, LayerScale), OpenVLA's fused projector as three
Linear layers with GELUs, and transformers' LlamaForCausalLM (GQA, vocabulary padded by 64 rows as
OpenVLA pads its). Writes them as an OpenVLA-style checkpoint (prismatic names, two safetensors
shards + index, config.json) and the action logits of OpenVLA-OFT's pipeline computed with them:

  vision feats = each tower's SECOND-TO-LAST block output (timm get_intermediate_layers, patches
  only, no final norm), concatenated [featurizer = DINOv2, fused = SigLIP] -> projector ->
  sequence [BOS, patches, text after BOS (padding dropped), K*D zero action embeddings] ->
  LlamaModel with a 4D additive mask: causal prefix, action positions see the whole prefix and each
  other -> final norm -> lm_head at the action positions, columns vocab-256 .. vocab-1.

  python tests/parity_reference.py OUT_DIR
"""

import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

IMG, PATCH, VOCAB, PAD_VOCAB, N_ACT, TEXT_LEN = 32, 8, 1024, 1088, 8, 32
TOWER = dict(embed_dim=32, depth=3, num_heads=2, mlp_ratio=1.5)   # 3 blocks: the last is unused
LLAMA = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=96, vocab_size=PAD_VOCAB, rms_norm_eps=1e-5, rope_theta=10000.0,
             max_position_embeddings=256, tie_word_embeddings=False)
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def randomise(module, gen):
  """Every parameter random (norm weights and LayerScales around 1), so no mapping error hides
  behind an init value (zeros biases, ones norms)."""
  with torch.no_grad():
    for name, p in module.named_parameters():
      noise = torch.randn(p.shape, generator=gen) * 0.2
      one = p.ndim == 1 and name.endswith("weight") and "norm" in name or name.endswith("gamma")
      p.copy_(noise + 1.0 if one else noise)


def build(gen):
  torch.manual_seed(0)
  siglip = VisionTransformer(img_size=IMG, patch_size=PATCH, class_token=False, global_pool="map",
                             num_classes=0, act_layer="gelu_tanh", **TOWER)
  dino = VisionTransformer(img_size=IMG, patch_size=PATCH, class_token=True, reg_tokens=4,
                           no_embed_class=True, init_values=1e-5, num_classes=0, **TOWER)
  v = 2 * TOWER["embed_dim"]
  w = LLAMA["hidden_size"]
  projector = torch.nn.ModuleDict({"fc1": torch.nn.Linear(v, 4 * v), "fc2": torch.nn.Linear(4 * v, w),
                                   "fc3": torch.nn.Linear(w, w)})
  cfg = transformers.LlamaConfig(**LLAMA)
  cfg._attn_implementation = "eager"
  llama = transformers.LlamaForCausalLM(cfg)
  for m in (siglip, dino, projector, llama):
    randomise(m, gen)
    m.eval()
  return siglip, dino, projector, llama


def features(vit, x):
  """Output of the second-to-last block, patch tokens only, no final norm (OpenVLA's featurizer)."""
  n = len(vit.blocks)
  return vit.get_intermediate_layers(x, n={n - 2})[0]


def action_logits(models, image, text):
  """image uint8 [H, W, 3], text int [L] (BOS first, 0 = padding) -> f32[N_ACT, 256]."""
  siglip, dino, projector, llama = models
  x = torch.from_numpy(image).float().permute(2, 0, 1)[None] / 255.0            # [1, 3, H, W]
  xd = (x - MEAN[:, None, None]) / STD[:, None, None]
  xs = (x - 0.5) / 0.5
  v = torch.cat([features(dino, xd), features(siglip, xs)], dim=-1)
  gelu = torch.nn.functional.gelu
  v = projector["fc3"](gelu(projector["fc2"](gelu(projector["fc1"](v)))))
  ids = torch.from_numpy(text[text != 0].astype(np.int64))[None]
  emb = llama.model.embed_tokens(ids)
  w = v.shape[-1]
  seq = torch.cat([emb[:, :1], v, emb[:, 1:], torch.zeros(1, N_ACT, w)], dim=1)
  s = seq.shape[1]
  allowed = torch.tril(torch.ones(s, s, dtype=torch.bool))
  allowed[s - N_ACT:, s - N_ACT:] = True
  mask = torch.zeros(1, 1, s, s).masked_fill(~allowed, torch.finfo(torch.float32).min)
  out = llama.model(inputs_embeds=seq, attention_mask=mask, position_ids=torch.arange(s)[None])
  h = out.last_hidden_state[0, s - N_ACT:]
  return llama.lm_head(h)[:, VOCAB - 256:VOCAB], seq, mask


def main(out):
  gen = torch.Generator().manual_seed(0)
  models = build(gen)
  siglip, dino, projector, llama = models
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, IMG, IMG, 3), dtype=np.uint8)
  text = np.zeros((2, TEXT_LEN), np.int32)
  text[0, :7] = [1, *rng.integers(3, VOCAB, 6)]
  text[1, :TEXT_LEN] = [1, *rng.integers(3, VOCAB, TEXT_LEN - 1)]
  with torch.no_grad():
    logits = []
    for i in range(2):
      lg, seq, mask = action_logits(models, images[i], text[i])
      logits.append(lg.numpy())
      # the 4D mask really reached the attention: the first action position depends on the last
      # one (bidirectional), BOS does not depend on anything after it (causal)
      s = seq.shape[1]
      seq2 = seq.clone()
      seq2[:, -1] += 1.0
      h1 = llama.model(inputs_embeds=seq, attention_mask=mask,
                       position_ids=torch.arange(s)[None]).last_hidden_state
      h2 = llama.model(inputs_embeds=seq2, attention_mask=mask,
                       position_ids=torch.arange(s)[None]).last_hidden_state
      assert torch.equal(h1[:, 0], h2[:, 0]), "the 4D mask was not applied (BOS saw the future)"
      assert not torch.allclose(h1[:, s - N_ACT], h2[:, s - N_ACT]), "actions not bidirectional"

  os.makedirs(out, exist_ok=True)
  flat = {}
  for prefix, m in (("vision_backbone.featurizer.", dino), ("vision_backbone.fused_featurizer.", siglip),
                    ("projector.", projector), ("language_model.", llama)):
    for k, t in m.state_dict().items():
      # OpenVLA renames timm's LayerScale gamma (HF would overwrite a "gamma")
      k = k.replace(".ls1.gamma", ".ls1.scale_factor").replace(".ls2.gamma", ".ls2.scale_factor")
      flat[prefix + k] = t.detach().contiguous().clone()
  keys = sorted(flat)
  shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
            "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
  for name, ks in shards.items():
    save_file({k: flat[k] for k in ks}, os.path.join(out, name))
  with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
    json.dump({"weight_map": {k: n for n, ks in shards.items() for k in ks}}, f)
  hf = {"image_sizes": [IMG, IMG], "n_action_bins": 256, "use_fused_vision_backbone": True,
        "timm_model_ids": [f"vit_tiny_patch{PATCH}_reg4_dinov2", f"vit_tiny_patch{PATCH}_siglip"],
        "text_config": {k: LLAMA[k] for k in ("hidden_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads",
                                              "intermediate_size", "rms_norm_eps", "rope_theta")}}
  with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(hf, f)
  np.savez(os.path.join(out, "reference.npz"), image=images, text=text, logits=np.stack(logits),
           versions=np.array([torch.__version__, transformers.__version__,
                              __import__("timm").__version__]))
  print(f"wrote {out}: torch {torch.__version__}, transformers {transformers.__version__}")


if __name__ == "__main__":
  main(sys.argv[1])
