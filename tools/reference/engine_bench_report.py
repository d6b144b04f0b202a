#!/usr/bin/env python3
"""The tables of scripts/gpu_engine_bench.sh, from the reports it leaves in
its output directory (kvactor-bench JSON, hf_generate.json, ceilings.json),
as Markdown for docs/performance.md.

    python3 tools/reference/engine_bench_report.py OUT
"""
import json
import os
import sys


def load(out, name):
    path = os.path.join(out, name + ".json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ms(x):
    return "-" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.1f}")


def lat(report, which, group=None):
    block = report.get("groups", {}).get(group, {}) if group else report["latency_ms"]
    if which not in block:
        return {"p50": None, "p99": None}
    return block[which]


def problems(report):
    """What a correct daemon never shows: errors, hang-ups, protocol faults, not idle afterwards."""
    out = []
    r = report["requests"]
    if r["errors"]:
        out.append(f"errors {r['errors']}")
    if r["unanswered"]:
        out.append(f"{r['unanswered']} unanswered")
    bad = {k: v for k, v in report["protocol"].items() if v not in (0, {}, None)}
    if bad:
        out.append(f"protocol {bad}")
    if not report["daemon"]["idle_after"] or not report["daemon"]["healthy_after"]:
        out.append("daemon not idle or not healthy afterwards")
    return "; ".join(out)


def main():
    out = sys.argv[1]
    notes = []
    ceilings = load(out, "ceilings")
    if ceilings:
        print(f"ceilings: copy {ceilings['copy_bandwidth_GBps']:.0f} GB/s (read + written), "
              f"cuBLASLt bf16 GEMM 8192^3 {ceilings['gemm_bf16_8192_TFLOPs']:.0f} TFLOP/s\n")

    hf = load(out, "hf_generate")
    hf_best = hf["best"]["output_tok_per_s"] if hf and hf.get("best") else None
    print("throughput: 256 requests of 512 prompt and 256 output tokens, all at once (Llama-3-8B shape, bf16)\n")
    print("| run | output tok/s | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) | duration (s) | vs best HF |")
    print("|---|---|---|---|---|---|")
    for streams in (1, 2):
        r = load(out, f"throughput_streams{streams}")
        if not r:
            print(f"| kvactord, gpu.streams = {streams} | no result | | | | |")
            continue
        tps = r["throughput"]["output_tokens_per_s"]
        vs = f"{tps / hf_best:.2f}x" if hf_best else "-"
        print(f"| kvactord + kvactor-bench, gpu.streams = {streams} | {tps:.0f} | {ms(lat(r, 'ttft')['p50'])} / "
              f"{ms(lat(r, 'ttft')['p99'])} | {ms(lat(r, 'itl')['p50'])} / {ms(lat(r, 'itl')['p99'])} | "
              f"{r['duration_s']:.2f} | {vs} |")
        if problems(r):
            notes.append(f"throughput_streams{streams}: {problems(r)}")
    for run in (hf or {}).get("runs", []):
        if "error" in run:
            print(f"| transformers generate(), {run['cache']} cache | {run['error']} | | | | |")
            continue
        print(f"| transformers generate(), {run['cache']} cache | {run['output_tok_per_s']:.0f} | "
              f"{run['ttft_s_approx'] * 1e3:.0f} (all) | {ms(run['itl_ms_p50'])} / {ms(run['itl_ms_p99'])} | "
              f"{run['seconds']:.2f} | {run['output_tok_per_s'] / hf_best:.2f}x |")

    print("\nscenarios (kvactor-bench against kvactord on the GPU)\n")
    print("| scenario | requests/s | output tok/s | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) | prefix-cache hits | preemptions |")
    print("|---|---|---|---|---|---|---|")
    for name, label in (("chat", "chat, 64 in flight"),
                        ("shared_prefix_on", "shared-prefix, prefix cache on"),
                        ("shared_prefix_off", "shared-prefix, prefix cache off"),
                        ("long_prompt_chunk512", "long-prompt, prefill_chunk 512 (short requests)"),
                        ("long_prompt_unchunked", "long-prompt, unlimited chunks (short requests)")):
        r = load(out, name)
        if not r:
            print(f"| {label} | no result | | | | | |")
            continue
        group = "short" if name.startswith("long_prompt") else None
        hit = r["prefix_cache"]["hit_rate"]
        print(f"| {label} | {r['throughput']['requests_per_s']:.1f} | {r['throughput']['output_tokens_per_s']:.0f} | "
              f"{ms(lat(r, 'ttft', group)['p50'])} / {ms(lat(r, 'ttft', group)['p99'])} | "
              f"{ms(lat(r, 'itl', group)['p50'])} / {ms(lat(r, 'itl', group)['p99'])} | "
              f"{'-' if hit is None else f'{100 * hit:.1f}%'} | {r['preemptions'] if r['preemptions'] is not None else '-'} |")
        if group:
            lg = lat(r, "ttft", "long")
            notes.append(f"{name}: long prompts' TTFT p50 {ms(lg['p50'])} ms, p99 {ms(lg['p99'])} ms")
        if problems(r):
            notes.append(f"{name}: {problems(r)}")
    if notes:
        print()
        for n in notes:
            print("- " + n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
