#!/usr/bin/env python3
"""Makes kvactor's embedded default model: a byte-level BPE tokenizer (HF
tokenizers, 2,048 tokens) and a 2M-parameter Llama trained for a few
thousand steps on the Python language reference that ships with CPython
(pydoc_data.topics). It writes Python-documentation-flavoured English; it
knows nothing else. Deterministic in its seeds; run once, output committed.

    python3 tools/reference/make_default_model.py --out models/default --ref tests/data/models/default_reference.json
"""
import argparse
import json
import math
import os
import time

import torch
import transformers
from pydoc_data.topics import topics
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"


def make_tokenizer(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2048, special_tokens=[BOS, EOS], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    torch.manual_seed(0)
    texts = [topics[k] for k in sorted(topics)]
    tok = make_tokenizer(texts)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    stream = []
    for t in texts:
        stream += [bos] + tok.encode(t, add_special_tokens=False).ids + [eos]
    data = torch.tensor(stream, dtype=torch.long)
    print(f"corpus: {len(texts)} topics, {sum(map(len, texts))} chars, {len(stream)} tokens, vocab {tok.get_vocab_size()}")

    cfg = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=192, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    cfg.architectures = ["LlamaForCausalLM"]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = transformers.LlamaForCausalLM(cfg).to(dev)
    print(f"parameters: {sum(p.numel() for p in model.parameters())}")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1, betas=(0.9, 0.95))
    seq, batch = 256, 64
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    for step in range(args.steps):
        lr = 2e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=gen)
        x = torch.stack([data[s:s + seq + 1] for s in starts]).to(dev)
        with torch.autocast(dev, dtype=torch.bfloat16):
            logits = model(input_ids=x[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 500 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {time.time() - t0:.0f}s")

    model = model.to("cpu", torch.bfloat16).eval()
    model.generation_config = transformers.GenerationConfig(bos_token_id=bos, eos_token_id=eos)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    tok.save(os.path.join(args.out, "tokenizer.json"))

    # Reference: the saved bf16 weights upcast to float64, HF's own tokenizer.
    model = transformers.LlamaForCausalLM.from_pretrained(args.out, dtype=torch.float64,
                                                          attn_implementation="eager").eval()
    tok = Tokenizer.from_file(os.path.join(args.out, "tokenizer.json"))
    ref = []
    for prompt in ["The \"with\" statement", "A function definition defines", "Integer literals are"]:
        ids = tok.encode(prompt, add_special_tokens=True).ids
        with torch.no_grad():
            last = model(torch.tensor([ids])).logits[0, -1]
            out, cur, margins = [], list(ids), []
            for _ in range(32):
                logits = model(torch.tensor([cur])).logits[0, -1]
                top2 = torch.topk(logits, 2)
                out.append(int(top2.indices[0]))
                margins.append(float(top2.values[0] - top2.values[1]))
                cur.append(out[-1])
        ref.append({"prompt": prompt, "ids": ids, "last_logits": [float(f"{x:.7g}") for x in last.tolist()],
                    "greedy": out, "min_margin": min(margins), "text": tok.decode(out)})
        print(f"{prompt!r} -> {tok.decode(out)!r} (min margin {min(margins):.3f})")
    os.makedirs(os.path.dirname(args.ref), exist_ok=True)
    with open(args.ref, "w") as f:
        json.dump(ref, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
