#!/usr/bin/env python3
"""The peer of `mixforge tokenizer bench`: Python `tokenizers` encode_batch on the same texts.

Usage: RAYON_NUM_THREADS=N python bench/hf_tokenize.py TOKENIZER.json INPUT.jsonl [RUNS]
Loads every `text`, warms up on 50 documents, times RUNS full encode_batch calls (default
add_special_tokens=True, as users call it), prints one JSON line with the median.
"""
import json
import os
import statistics
import sys
import time
from importlib.metadata import version

from tokenizers import Tokenizer


def main():
    tokenizer_path, input_path = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    tok = Tokenizer.from_file(tokenizer_path)
    tok.no_truncation()
    tok.no_padding()
    with open(input_path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    tok.encode_batch(texts[:50])
    seconds, tokens = [], 0
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        encodings = tok.encode_batch(texts)
        seconds.append(time.perf_counter() - t0)
        tokens = sum(len(e.ids) for e in encodings)
    # Same order-sensitive checksum as `mixforge tokenizer bench`: identical ids, same value.
    p, checksum = (1 << 61) - 1, 0
    for e in encodings:
        doc = sum((t + 1) * (i + 1) % p for i, t in enumerate(e.ids)) % p
        checksum = (checksum * 1_000_003 + doc) % p
    median = statistics.median(seconds)
    print(json.dumps({
        "tool": f"tokenizers (Python) {version('tokenizers')}",
        "threads": int(os.environ.get("RAYON_NUM_THREADS", "0")) or os.cpu_count(),
        "docs": len(texts), "bytes": n_bytes, "tokens": tokens,
        "runs_s": sorted(seconds), "median_s": median,
        "tokens_per_s": tokens / median, "mb_per_s": n_bytes / 1e6 / median, "checksum": checksum,
    }))


if __name__ == "__main__":
    main()
