#!/usr/bin/env python3
"""Throughput of Hugging Face transformers' generate() on the workload of
scripts/gpu_engine_bench.sh: N requests of P random prompt tokens and O
output tokens each (greedy, no early stop), all in one batch.

LlamaForCausalLM from a config.json with random bf16 weights drawn on the
GPU, sdpa attention, eager PyTorch (no torch.compile); each cache implementation asked for
runs once ("static" preallocates the cache and writes in place, "dynamic"
grows it by concatenation). Times are wall clock around generate() with
the GPU synchronised; TTFT and inter-token latency are read from a logits
processor's call times (generate synchronises every step to check its
stopping criteria, so the calls are one step apart). Writes a JSON object.

    python3 tools/reference/hf_generate_bench.py [--config tools/shapes/llama3-8b] \\
        [--requests 256] [--prompt-len 512] [--output-len 256] [--caches static,dynamic] [--out hf.json]
"""
import argparse
import json
import statistics
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessor, LogitsProcessorList


class StepClock(LogitsProcessor):
    """Records when generate() reaches each step's logits."""

    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def run(model, prompts, output_len, cache):
    clock = StepClock()
    kwargs = dict(max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False,
                  logits_processor=LogitsProcessorList([clock]), pad_token_id=0)
    if cache == "static":
        kwargs["cache_implementation"] = "static"
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), **kwargs)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    new_tokens = (out.shape[1] - prompts.shape[1]) * out.shape[0]
    gaps = [b - a for a, b in zip(clock.times, clock.times[1:])]
    # The first call sees the prefill's logits; they are on the host one step later.
    ttft = (clock.times[1] - t0) if len(clock.times) > 1 else seconds
    return {
        "cache": cache,
        "seconds": seconds,
        "output_tokens": int(new_tokens),
        "output_tok_per_s": new_tokens / seconds,
        "ttft_s_approx": ttft,
        "itl_ms_p50": 1e3 * statistics.median(gaps[1:]) if len(gaps) > 1 else None,
        "itl_ms_p99": 1e3 * sorted(gaps[1:])[int(0.99 * (len(gaps) - 2))] if len(gaps) > 1 else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tools/shapes/llama3-8b")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--caches", default="static,dynamic")
    parser.add_argument("--out", default="hf_generate.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = LlamaConfig.from_pretrained(args.config)
    torch.set_default_dtype(torch.bfloat16)
    t0 = time.perf_counter()
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    model.eval()
    # NOTE: with a static cache generate() would compile the forward pass
    # (torch.compile) inside the timed call; eager keeps the runs comparable.
    model.generation_config.disable_compile = True
    # NOTE: timing on zeros would flatter it: the weights must be random.
    std_down = float(model.model.layers[0].mlp.down_proj.weight.float().std())
    print(f"hf_generate_bench: model built in {time.perf_counter() - t0:.1f} s, attention "
          f"{model.config._attn_implementation}, std of layer 0's down_proj {std_down:.4f}", flush=True)
    prompts = torch.randint(0, config.vocab_size, (args.requests, args.prompt_len), device="cuda")
    result = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "device": torch.cuda.get_device_name(),
        "attention": model.config._attn_implementation,
        "mode": "eager, generate() batched, greedy",
        "down_proj_std": std_down,
        "workload": {"requests": args.requests, "prompt_len": args.prompt_len, "output_len": args.output_len},
        "runs": [],
    }
    with torch.inference_mode():
        for cache in args.caches.split(","):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            try:
                r = run(model, prompts, args.output_len, cache)
            except torch.cuda.OutOfMemoryError as e:
                r = {"cache": cache, "error": "out of memory: " + str(e).splitlines()[0]}
            result["runs"].append(r)
            print("hf_generate_bench: " + json.dumps(r), flush=True)
    done = [r for r in result["runs"] if "output_tok_per_s" in r]
    result["best"] = max(done, key=lambda r: r["output_tok_per_s"]) if done else None
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
