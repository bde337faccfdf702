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
cargo build --release --bin mixforge
for tok in ../shared/data/tokenizers/llama-test-tokenizer.json ../shared/data/tokenizers/gpt-neo-test-tokenizer.json; do
  for threads in 1 2; do
    ours=$(RAYON_NUM_THREADS=$threads "$MIXFORGE" --threads "$threads" tokenizer bench --tokenizer "$tok" --input .bench/corpus.jsonl --add-special-tokens)
    theirs=$(RAYON_NUM_THREADS=$threads TOKENIZERS_PARALLELISM=true .bench/venv/bin/python bench/hf_tokenize.py "$tok" .bench/corpus.jsonl)
    python3 - "$tok" "$threads" "$ours" "$theirs" <<'PY'
import json, os, sys
tok, threads, ours, theirs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
assert ours["tokens"] == theirs["tokens"], f"token counts differ: {ours['tokens']} vs {theirs['tokens']}"
print(f"{os.path.basename(tok):<28} threads {threads}: mixforge {ours['tokens_per_s']:>11,.0f} tok/s  "
      f"python {theirs['tokens_per_s']:>11,.0f} tok/s  ratio {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x  "
      f"({ours['tokens']:,} tokens each)")
PY
  done
done
