#!/usr/bin/env bash
# `just bench-train`: mixforge vs a PyTorch eager reference (bench/train_reference.py) training
# the same model config, batch and sequence length on the same libtorch (torch 2.11 from the
# project's virtualenv) and thread count. Prints tokens/s for both and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release
THREADS="${THREADS:-2}"
SHARDS=runs/demo/shards
[ -f "$SHARDS/manifest.json" ] || "$MIXFORGE" corpus run recipes/demo.toml --out runs/demo >/dev/null
mkdir -p .bench
# name preset seq batch steps
for spec in "proxy-12m 256 8 20" "proxy-5m 128 16 40"; do
  set -- $spec
  runs=()
  for round in 1 2 3; do
    out=".bench/train-$1"
    rm -rf "$out"
    "$MIXFORGE" --threads "$THREADS" train --model "$1" --shards "$SHARDS" --steps "$4" --seq-len "$2" \
      --batch-size "$3" --eval-sequences 1 --warmup 5 --out "$out" >/dev/null 2>&1
    # The model config as trained, read back from the checkpoint, for the reference.
    python3 -c "import json; d='$out/checkpoints/'+open('$out/checkpoints/latest').read().strip(); json.dump(json.load(open(d+'/state.json'))['config']['model'], open('.bench/model-$1.json','w'))"
    runs+=("$(python3 -c "import json; print(json.load(open('$out/summary.json'))['tokens_per_s'])")")
    runs+=("$("$MIXFORGE_PYTHON" bench/train_reference.py ".bench/model-$1.json" "$SHARDS" "$2" "$3" "$4" "$THREADS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')")
  done
  python3 - "$1" "$2" "$3" "$THREADS" "${runs[@]}" <<'PY'
import statistics, sys
name, seq, batch, threads, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], [float(x) for x in sys.argv[5:]]
ours, ref = runs[0::2], runs[1::2]
m, r = statistics.median(ours), statistics.median(ref)
print(f"{name:<10} seq {seq} batch {batch} threads {threads}: mixforge {m:8,.0f} tok/s ({min(ours):,.0f}-{max(ours):,.0f})  "
      f"pytorch eager {r:8,.0f} tok/s ({min(ref):,.0f}-{max(ref):,.0f})  ratio {m / r:.2f}x")
PY
done
