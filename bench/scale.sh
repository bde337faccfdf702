#!/usr/bin/env bash
# `just bench-scale`: the corpus run at 10 MB, 100 MB and 1 GB (built from the benchmark
# corpus with planted duplicates), one core: wall time, MB/s, peak RSS, fitted exponents.
# SIZES=10,100 for a quick look. A benchmark, not a test; ~15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
mkdir -p .bench
[ -s .bench/corpus.jsonl ] || python3 bench/make_corpus.py .bench/corpus.jsonl
cargo build --release
python3 bench/bench_scale.py "$MIXFORGE" .bench/corpus.jsonl .bench/scale "${SIZES:-10,100,1000}"
