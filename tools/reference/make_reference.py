#!/usr/bin/env python3
"""Reference data for kvactor's tests, from Hugging Face transformers and
tokenizers (run where torch/transformers/tokenizers are installed):

    python3 tools/reference/make_reference.py --tokenizers DIR --out tests/data

Writes
  tokenizers/<name>.json  ids and decodes of corpus.json for each tokenizer
  models/<name>/          tiny random-weight HF models of each architecture,
                          config.legacy.json (older config spelling) and
                          reference.json (float64 logits, greedy continuations)
"""
import argparse
import json
import math
import os

import torch
import transformers
from tokenizers import Tokenizer

TOKENIZERS = ["llama3", "qwen3", "llama2"]


def tokenizer_reference(tok_dir, corpus, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name in TOKENIZERS:
        tok = Tokenizer.from_file(os.path.join(tok_dir, name, "tokenizer.json"))
        cases = []
        for text in corpus:
            ids = tok.encode(text, add_special_tokens=False).ids
            ids_special = tok.encode(text, add_special_tokens=True).ids
            cases.append({"text": text, "ids": ids, "ids_special": ids_special,
                          "decoded": tok.decode(ids_special, skip_special_tokens=False),
                          "decoded_skip": tok.decode(ids_special, skip_special_tokens=True)})
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump({"tokenizer": name, "cases": cases}, f, ensure_ascii=False)
        print(f"tokenizer {name}: {len(cases)} cases")


BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)

MODELS = {
    "llama2": ("LlamaForCausalLM", transformers.LlamaConfig,
               dict(num_key_value_heads=4, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
               dict(dtype=torch.float32, shard="100KB")),
    "llama3": ("LlamaForCausalLM", transformers.LlamaConfig,
               dict(tie_word_embeddings=True,
                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192}),
               dict(dtype=torch.float32)),
    "mistral": ("MistralForCausalLM", transformers.MistralConfig,
                dict(sliding_window=8, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
                dict(dtype=torch.bfloat16)),
    "qwen2": ("Qwen2ForCausalLM", transformers.Qwen2Config,
              dict(num_hidden_layers=3, use_sliding_window=True, sliding_window=8, max_window_layers=1,
                   rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
              dict(dtype=torch.float32)),
    "qwen3": ("Qwen3ForCausalLM", transformers.Qwen3Config,
              dict(head_dim=32, tie_word_embeddings=True,
                   rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
              dict(dtype=torch.float32)),
}


def init_weights(model, gen):
    # Larger than HF's 0.02 init, so logits have margins a float32 engine can
    # reproduce token for token.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif "lm_head" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / math.sqrt(p.shape[1]))


def legacy_config(cfg):
    """The same config in the older spelling (transformers 4)."""
    old = {k: v for k, v in cfg.items() if k not in ("dtype", "rope_parameters", "layer_types")}
    old["torch_dtype"] = cfg.get("dtype", "float32")
    rope = dict(cfg.get("rope_parameters") or {})
    old["rope_theta"] = rope.pop("rope_theta", 10000.0)
    if rope.get("rope_type", "default") != "default":
        old["rope_scaling"] = rope
    else:
        old["rope_scaling"] = None
    return old


@torch.no_grad()
def greedy(model, prompt, n):
    ids = list(prompt)
    out, margins = [], []
    for _ in range(n):
        logits = model(torch.tensor([ids])).logits[0, -1]
        top2 = torch.topk(logits, 2)
        out.append(int(top2.indices[0]))
        margins.append(float(top2.values[0] - top2.values[1]))
        ids.append(out[-1])
    return out, min(margins)


def model_reference(name, spec, out_dir, gen):
    arch, cls, overrides, save = spec
    kwargs = dict(BASE)
    kwargs.update(overrides)
    cfg = cls(**kwargs)
    cfg.architectures = [arch]
    model = getattr(transformers, arch)(cfg).eval()
    init_weights(model, gen)
    model.to(save["dtype"])
    d = os.path.join(out_dir, name)
    model.save_pretrained(d, max_shard_size=save.get("shard", "50MB"))
    # The reference uses exactly the saved weights, upcast to float64.
    model = getattr(transformers, arch).from_pretrained(d, dtype=torch.float64, attn_implementation="eager").eval()
    with open(os.path.join(d, "config.json")) as f:
        cfg_json = json.load(f)
    with open(os.path.join(d, "config.legacy.json"), "w") as f:
        json.dump(legacy_config(cfg_json), f, indent=2)
    vocab = cfg.vocab_size
    ref = {"logits": [], "greedy": []}
    with torch.no_grad():
        for n in (7, 19, 40):
            tokens = torch.randint(0, vocab, (n,), generator=gen).tolist()
            logits = model(torch.tensor([tokens])).logits[0]
            ref["logits"].append({"tokens": tokens,
                                  "logits": [[float(f"{x:.7g}") for x in row] for row in logits.tolist()]})
    for n in (5, 12):
        prompt = torch.randint(0, vocab, (n,), generator=gen).tolist()
        output, margin = greedy(model, prompt, 32)
        ref["greedy"].append({"prompt": prompt, "output": output, "min_margin": margin})
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f)
    print(f"model {name}: {arch} layer_types={cfg_json.get('layer_types')} "
          f"rope={cfg_json.get('rope_parameters')} files={sorted(os.listdir(d))} "
          f"greedy min margins={[g['min_margin'] for g in ref['greedy']]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizers", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    print("transformers", transformers.__version__, "torch", torch.__version__)
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "tokenizers", "corpus.json")) as f:
        corpus = json.load(f)
    tokenizer_reference(args.tokenizers, corpus, os.path.join(args.out, "tokenizers"))
    gen = torch.Generator().manual_seed(1234)
    for name, spec in MODELS.items():
        model_reference(name, spec, os.path.join(args.out, "models"), gen)


if __name__ == "__main__":
    main()
