#!/usr/bin/env python3
"""Writes the tokenizer test corpus: >= 300 strings covering ASCII, accents,
CJK, emoji, code, whitespace runs, digits, special-token text and
invalid-looking input. Deterministic; plain Python, no dependencies.

    python3 tools/reference/make_corpus.py > tests/data/tokenizers/corpus.json
"""
import json
import random

rng = random.Random(20261122)

fixed = [
    "Hello, world!", "hello world", "The quick brown fox jumps over the lazy dog.",
    "I'm sure it's what they'd've wanted, isn't it? We'll see.", "IT'S ALL CAPS, YOU'RE SHOUTING",
    "Don't", "she's", "THEY'RE", "o'clock", "rock 'n' roll", "'quoted'", "\"double quoted\"",
    "A", "a", " ", "  ", "   leading spaces", "trailing spaces   ", "tab\tseparated\tvalues",
    "line one\nline two\nline three", "windows\r\nline\r\nendings", "\n", "\n\n\n", " \n ", "\t\t\t",
    "a  b   c    d", "end with newline\n", "\nstart with newline", "mixed \t \n whitespace \r\n here",
    "café", "naïve résumé", "Ångström", "Crème brûlée à la mode", "façade coöperate",
    "e\u0301 (decomposed é)", "A\u030a (decomposed Å)", "n\u0303o\u0308", "ﬁ ligature", "Straße", "İstanbul",
    "Größe", "Ærøskøbing", "Dvořák", "Łódź", "ça va? très bien!",
    "中文测试", "你好，世界！", "日本語のテキストです。", "ひらがな カタカナ", "한국어 문장입니다", "漢字と仮名の混在",
    "Привет, мир!", "Ελληνικά γράμματα", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีครับ",
    "👍", "👍🏽", "👨‍👩‍👧‍👦", "🇩🇪🇯🇵", "I ❤️ NY", "🙂🙃😀😁", "emoji👍in the middle", "🧑‍💻 coding",
    "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "#include <vector>\nint main() { return 0; }", "SELECT * FROM users WHERE id = 42;",
    "x = [1, 2, 3]  # list", "if (a && b || !c) { /* comment */ }", "const re = /^[a-z]+$/i;",
    "<div class=\"a\">text</div>", "{\"key\": \"value\", \"n\": 1}", "a->b, c::d, e=>f",
    "    indented four", "\tindented tab", "        eight spaces", "lambda x: x**2",
    "0", "1", "12", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000", "2026-11-22",
    "v1.2.3", "0x1F", "1e-10", "-42", "+7", "100%", "$19.99", "12:30:45", "555-1234", "١٢٣ ٤٥٦",
    "<|begin_of_text|>Hello", "<|end_of_text|>", "<|begin_of_text|><|begin_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", "<|eot_id|>", "<|reserved_special_token_5|>",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<s>", "</s>", "<unk>", "<s> hello </s>", "text<s>text", "</s></s>", "<|im_start", "im_start|>",
    "<|begin_of_text", "<|fake_token|>", "< s >", "<<s>>", "<think>\nreasoning\n</think>",
    "\u0000", "a\u0000b", "\ufffd", "\ufeffBOM at start", "zero\u200bwidth\u200bspace", "\u200d", "\u0301",
    "\u202eRTL override", "\x7f", "\x01\x02\x03", "\\x80\\xff", "\\u0000", "%s %d %x", "\u00a0non-breaking\u00a0space",
    "\u3000ideographic space", "\u2028line separator", "\u0085next line", "ｆｕｌｌｗｉｄｔｈ", "①②③", "ⅷ",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "ThisIsCamelCaseIdentifier", "snake_case_identifier_name", "kebab-case-name", "UPPER_SNAKE",
    "..." , "!!!???", "---", "___", "***", "~~~", "```python\nprint(1)\n```", "> quoted text",
    "- item one\n- item two", "1. first\n2. second", "| a | b |\n|---|---|", "https://example.com/path?q=1&r=2",
    "user@example.com", "C:\\Users\\name\\file.txt", "/usr/local/bin", "¯\\_(ツ)_/¯", "(╯°□°)╯︵ ┻━┻",
]

ranges = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x6ff), (0x900, 0x97f),
          (0x3040, 0x30ff), (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0x1f300, 0x1f64f), (0x2000, 0x206f),
          (0x0300, 0x036f), (0xe000, 0xe0ff), (0x10000, 0x1007f)]

def random_string():
    n = rng.randint(1, 40)
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.15:
            out.append(rng.choice([" ", "  ", "\n", "\t", " \n"]))
        elif r < 0.25:
            out.append(str(rng.randint(0, 99999)))
        else:
            lo, hi = rng.choice(ranges)
            out.append(chr(rng.randint(lo, hi)))
    return "".join(out)

words = "the of and to in is you that it he was for on are as with his they at be this have from".split()
def random_sentence():
    return " ".join(rng.choice(words) for _ in range(rng.randint(3, 25))).capitalize() + rng.choice([".", "!", "?", ""])

corpus = list(fixed)
corpus += [random_sentence() for _ in range(40)]
corpus += [random_string() for _ in range(120)]
corpus.append(" ".join(fixed[:60]))  # one long mixed string
assert len(corpus) >= 300, len(corpus)
print(json.dumps(corpus, ensure_ascii=False, indent=0))
