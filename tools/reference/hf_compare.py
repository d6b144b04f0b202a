#!/usr/bin/env python3
"""Random bf16 weights of a model shape, saved as a Hugging Face model
directory, with transformers' answers on them for tests/gpu/cuda_hf_compare_test.cpp.

Draws the weights on the GPU (seeded), saves them with save_pretrained (bf16
safetensors) and writes hf_reference.json beside them: for random prompts,
the last position's logits of the model run in bf16 (as transformers runs a
bf16 checkpoint) and in fp32 on the same bf16 weights (the better
reference), and 32 greedy tokens of each with the top-1 / top-2 margin at
every pick.

The weights are scaled so that every layer matters and the logits spread
like a trained model's (a few units): matrices ~ N(0, 1 / fan_in), the
embedding ~ N(0, 1), norms in [0.8, 1.2], lm_head ~ N(0, 2.5^2 / hidden).
lm_head is untied: tied to an N(0, 1) embedding, each position's own token
would win every greedy pick.

    python3 tools/reference/hf_compare.py --config tools/shapes/llama3-1b --out DIR
"""
import argparse
import copy
import json
import math
import os
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PROMPT_LENGTHS = [5, 31, 128, 257, 700, 1500]
NEW_TOKENS = 32


def init_weights(model, hidden, generator):
    for name, p in model.named_parameters():
        with torch.no_grad():
            if p.dim() == 1:
                p.copy_(torch.empty_like(p, dtype=torch.float32).uniform_(0.8, 1.2, generator=generator))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=generator, device=p.device))
            elif "lm_head" in name:
                p.copy_(torch.randn(p.shape, generator=generator, device=p.device) * (2.5 / math.sqrt(hidden)))
            else:
                p.copy_(torch.randn(p.shape, generator=generator, device=p.device) / math.sqrt(p.shape[1]))


def top2_margin(row):
    top = torch.topk(row.float(), 2).values
    return float(top[0] - top[1])


@torch.inference_mode()
def last_logits(model, tokens):
    ids = torch.tensor([tokens], device="cuda")
    return model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()


@torch.inference_mode()
def greedy(model, tokens, steps):
    """Greedy tokens with the margin at each pick (a DynamicCache, one token a step)."""
    ids = torch.tensor([tokens], device="cuda")
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    picked, margins = [], []
    for _ in range(steps):
        row = out.logits[0, -1]
        token = int(torch.argmax(row))
        picked.append(token)
        margins.append(top2_margin(row))
        out = model(input_ids=torch.tensor([[token]], device="cuda"), past_key_values=out.past_key_values,
                    use_cache=True, logits_to_keep=1)
    return picked, margins


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tools/shapes/llama3-1b")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    t0 = time.perf_counter()
    config = LlamaConfig.from_pretrained(args.config)
    config.tie_word_embeddings = False
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    generator = torch.Generator(device="cuda").manual_seed(args.seed)
    init_weights(model, config.hidden_size, generator)
    model.eval()
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    print(f"hf_compare: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters saved to {args.out} "
          f"in {time.perf_counter() - t0:.1f} s, attention {model.config._attn_implementation}", flush=True)

    fp32 = copy.deepcopy(model).float()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    prompt_gen = torch.Generator().manual_seed(args.seed + 1)
    cases = []
    for length in PROMPT_LENGTHS:
        tokens = torch.randint(0, config.vocab_size, (length,), generator=prompt_gen).tolist()
        bf16_logits = last_logits(model, tokens)
        fp32_logits = last_logits(fp32, tokens)
        g32, m32 = greedy(fp32, tokens, NEW_TOKENS)
        g16, m16 = greedy(model, tokens, NEW_TOKENS)
        rel = float(torch.linalg.vector_norm(bf16_logits - fp32_logits) / torch.linalg.vector_norm(fp32_logits))
        print(f"hf_compare: prompt of {length}: logits std {float(fp32_logits.std()):.2f}, HF bf16 vs fp32 rel-L2 "
              f"{rel:.4f}, greedy bf16 = fp32 for {sum(a == b for a, b in zip(g16, g32))}/{NEW_TOKENS}, "
              f"min fp32 margin {min(m32):.3f}", flush=True)
        cases.append({
            "tokens": tokens,
            "hf_bf16_last_logits": bf16_logits.tolist(),
            "hf_fp32_last_logits": fp32_logits.tolist(),
            "greedy_fp32": g32, "margins_fp32": m32,
            "greedy_bf16": g16, "margins_bf16": m16,
        })
    with open(os.path.join(args.out, "hf_reference.json"), "w") as f:
        json.dump({"seed": args.seed, "new_tokens": NEW_TOKENS, "cases": cases}, f)
    print(f"hf_compare: wrote {len(cases)} cases in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
