#!/usr/bin/env python3
"""The Hugging Face transformers reference for tools/gpu_bench.cpp.

Builds LlamaForCausalLM from a config.json with random bf16 weights drawn on
the GPU (no checkpoint, no CPU init) and times, on the same shapes as
gpu_bench:
  - the forward of one 8192-token prompt (one call, logits of the last token);
  - batch-1 greedy decode at context 1024 (DynamicCache, the default);
  - decode steps of 256 sequences at context 640.
Eager PyTorch with the default attention (sdpa), as transformers runs a model
out of the box. Writes a JSON object of the numbers.

    python3 tools/reference/hf_bench.py [--config tools/shapes/llama3-8b] [--out hf.json]
"""
import argparse
import json
import statistics
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def timed(fn, warmup, reps):
    """Median seconds of fn() over reps runs after warmup runs."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def decode_ms(model, batch, context, steps, vocab):
    """Milliseconds per greedy decode step of `batch` sequences after a prefill of `context` tokens."""
    ids = torch.randint(0, vocab, (batch, context), device="cuda")
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    next_ids = out.logits[:, -1].argmax(-1, keepdim=True)
    del out

    def step():
        nonlocal next_ids
        o = model(input_ids=next_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        next_ids = o.logits[:, -1].argmax(-1, keepdim=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    ms = 1e3 * (time.perf_counter() - t0) / steps
    del cache
    torch.cuda.empty_cache()
    return ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tools/shapes/llama3-8b")
    parser.add_argument("--out", default="hf_bench.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = LlamaConfig.from_pretrained(args.config)
    torch.set_default_dtype(torch.bfloat16)
    t0 = time.perf_counter()
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    model.eval()
    print(f"hf_bench: model built in {time.perf_counter() - t0:.1f} s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters, "
          f"attention {model.config._attn_implementation}", flush=True)
    vocab = config.vocab_size
    result = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "device": torch.cuda.get_device_name(),
        "attention": model.config._attn_implementation,
        "mode": "eager, DynamicCache",
    }
    with torch.inference_mode():
        prompt = torch.randint(0, vocab, (1, 8192), device="cuda")
        seconds = timed(lambda: model(input_ids=prompt, use_cache=False, logits_to_keep=1), 1, 3)
        result["prefill_8192_seconds"] = seconds
        result["prefill_8192_tok_per_s"] = 8192 / seconds
        print(f"hf_bench: prefill 8192: {seconds * 1e3:.1f} ms, {8192 / seconds:.0f} tok/s", flush=True)

        ms = decode_ms(model, 1, 1024, 64, vocab)
        result["decode_b1_ctx1024_ms"] = ms
        result["decode_b1_ctx1024_tok_per_s"] = 1e3 / ms
        print(f"hf_bench: decode b1 ctx1024: {ms:.2f} ms/step", flush=True)

        ms = decode_ms(model, 256, 640, 8, vocab)
        result["decode_b256_ctx640_ms"] = ms
        print(f"hf_bench: decode b256 ctx640: {ms:.2f} ms/step", flush=True)

    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
