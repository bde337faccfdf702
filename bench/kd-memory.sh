#!/usr/bin/env bash
# Peak memory of one distillation step (student and teacher forward, backward) at MobileLLM-Pro's
# 202,048-token vocabulary and a 4,096-token window on CPU: the trainer's chunked loss against
# whole logits, each in its own process. The whole-logits run is capped at LIMIT_GB of address
# space so that running out of memory is reported instead of taking the machine down.
# Overrides: VOCAB [202048]  SEQ [4096]  LIMIT_GB [20]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release -p train --example kd_memory
BIN="$CARGO_TARGET_DIR/release/examples/kd_memory"
VOCAB=${VOCAB:-202048}
SEQ=${SEQ:-4096}
LIMIT_GB=${LIMIT_GB:-20}
chunked=$("$BIN" chunked "$VOCAB" "$SEQ")
echo "$chunked"
if whole=$(ulimit -v $((LIMIT_GB * 1024 * 1024)); "$BIN" whole "$VOCAB" "$SEQ" 2>/tmp/kd-memory-whole.err); then
    echo "$whole"
    "$MIXFORGE_PYTHON" -c "import json,sys; c=json.loads(sys.argv[1]); w=json.loads(sys.argv[2]); \
print(f\"peak RSS: chunked {c['peak_rss_mb']:.0f} MB, whole {w['peak_rss_mb']:.0f} MB ({w['peak_rss_mb']/c['peak_rss_mb']:.1f}x); \
loss {c['loss']:.6f} vs {w['loss']:.6f}; time {c['seconds']:.1f} s vs {w['seconds']:.1f} s\")" "$chunked" "$whole"
else
    echo "whole logits: failed within ${LIMIT_GB} GB of address space ($(tail -c 300 /tmp/kd-memory-whole.err | tr '\n' ' '))"
fi
