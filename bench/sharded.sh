#!/usr/bin/env bash
# `just bench-sharded`: the 100 MB corpus of bench-scale in 8 files as one process and as
# sharded runs (the reduce writing kept/, or the tasks), one thread per command: measured with 2
# tasks at once, and the critical path of N tasks. TASKS=4 FILES=8 REPEATS=3 SIZE_MB=100 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
mkdir -p .bench
[ -s .bench/corpus.jsonl ] || python3 bench/make_corpus.py .bench/corpus.jsonl
cargo build --release
python3 bench/bench_sharded.py "$MIXFORGE" .bench/corpus.jsonl .bench/sharded "${TASKS:-4}" "${FILES:-8}" "${REPEATS:-3}" "${SIZE_MB:-100}"
