#!/usr/bin/env bash
# `just bench-corpus`: mixforge vs datatrove 0.10.1 on the same real corpus (all of
# ../shared/data/corpus as one JSONL), one core each. A benchmark, not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
bash bench/setup_peer.sh
.bench/venv/bin/python bench/make_corpus.py .bench/corpus.jsonl
cargo build --release
.bench/venv/bin/python bench/bench_corpus.py "$MIXFORGE" .bench/corpus.jsonl .bench/corpus-runs "${RUNS:-3}"
