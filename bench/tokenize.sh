#!/usr/bin/env bash
# `just bench-tokenize`: mixforge vs Python `tokenizers` 0.23.3 encoding the same real
# documents (all of ../shared/data/corpus) with the same tokenizer.json and thread count.
# Prints tokens/s for both and the ratio, per tokenizer and thread count.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash bench/setup_peer.sh
.bench/venv/bin/pip install --quiet "tokenizers==0.23.3"
.bench/venv/bin/python bench/make_corpus.py .bench/corpus.jsonl
cargo build --release
for tok in ../shared/data/tokenizers/llama-test-tokenizer.json ../shared/data/tokenizers/gpt-neo-test-tokenizer.json; do
  for threads in 1 2; do
    # Three processes per tool, alternating, five timed encodings each; medians compared.
    runs=()
    for round in 1 2 3; do
      runs+=("$(RAYON_NUM_THREADS=$threads "$MIXFORGE" --threads "$threads" tokenizer bench --tokenizer "$tok" --input .bench/corpus.jsonl --add-special-tokens --runs 5)")
      runs+=("$(RAYON_NUM_THREADS=$threads TOKENIZERS_PARALLELISM=true .bench/venv/bin/python bench/hf_tokenize.py "$tok" .bench/corpus.jsonl 5)")
    done
    python3 - "$tok" "$threads" "${runs[@]}" <<'PY'
import json, os, statistics, sys
tok, threads, runs = sys.argv[1], sys.argv[2], [json.loads(r) for r in sys.argv[3:]]
ours, theirs = runs[0::2], runs[1::2]
assert len({r["checksum"] for r in runs}) == 1 and len({r["tokens"] for r in runs}) == 1, "token ids differ"
med = lambda rs: statistics.median(r["tokens_per_s"] for r in rs)
spread = lambda rs: f"{min(r['tokens_per_s'] for r in rs):,.0f}-{max(r['tokens_per_s'] for r in rs):,.0f}"
print(f"{os.path.basename(tok):<28} threads {threads}: mixforge {med(ours):>11,.0f} tok/s ({spread(ours)})  "
      f"python {med(theirs):>11,.0f} tok/s ({spread(theirs)})  ratio {med(ours) / med(theirs):.2f}x  "
      f"({runs[0]['tokens']:,} identical tokens)")
PY
  done
done
