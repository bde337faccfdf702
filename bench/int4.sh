#!/usr/bin/env bash
# int4 deployment on this CPU: size on disk and forward tokens/s of one model at full precision
# (fp32), as mixforge's int4 exports (libtorch's int4 kernels: dynamic int8 activations for the
# cpu scheme, weight-only for accel) and as GGUF Q4_0 in llama.cpp (llama-bench's prompt
# processing: a batched forward like ours), all side by side on the same machine and threads.
# Speed does not depend on the weights' values, so the model is a preset trained for one step
# on the demo shards. llama.cpp is built once from PyPI's llama-cpp-python sources
# (bench/build_llamacpp.sh). Overrides: MODEL [proxy-12m]  SEQ [256]  THREADS [2]  OUT [.bench/int4]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release
MODEL=${MODEL:-proxy-12m}
SEQ=${SEQ:-256}
THREADS=${THREADS:-2}
OUT=${OUT:-.bench/int4}
LLAMA=$(bash bench/build_llamacpp.sh)
mkdir -p "$OUT"
SHARDS="$OUT/corpus/shards"
[ -f "$SHARDS/manifest.json" ] || "$MIXFORGE" corpus run recipes/demo.toml --out "$OUT/corpus" >/dev/null
M="$OUT/$MODEL"
[ -f "$M/fp/summary.json" ] || "$MIXFORGE" train --model "$MODEL" --shards "$SHARDS" --steps 1 --seq-len 64 --batch-size 1 --eval-sequences 1 --out "$M/fp" >/dev/null
for scheme in cpu accel; do
    [ -f "$M/$scheme/checkpoints/latest" ] || "$MIXFORGE" quantize --checkpoint "$M/fp" --scheme "$scheme" --out "$M/$scheme" >/dev/null
    "$MIXFORGE" export --checkpoint "$M/$scheme" --int4 --out "$M/$scheme-int4" >/dev/null
    "$MIXFORGE" export --checkpoint "$M/$scheme" --gguf --out "$M/$scheme.gguf" >/dev/null
done
export OMP_NUM_THREADS=$THREADS
speed() { "$MIXFORGE" model speed --checkpoint "$1" --seq-len "$SEQ" --batch-size 1 --seconds 5 --json; }
fp=$(speed "$M/fp")
cpu=$(speed "$M/cpu-int4")
accel=$(speed "$M/accel-int4")
fakecpu=$(speed "$M/cpu")
llama_cpu=$("$LLAMA/llama-bench" -m "$M/cpu.gguf" -p "$SEQ" -n 0 -t "$THREADS" -r 5 -o json 2>/dev/null)
llama_accel=$("$LLAMA/llama-bench" -m "$M/accel.gguf" -p "$SEQ" -n 0 -t "$THREADS" -r 5 -o json 2>/dev/null)
"$MIXFORGE_PYTHON" - "$M" "$MODEL" "$SEQ" "$THREADS" "$fp" "$fakecpu" "$cpu" "$accel" "$llama_cpu" "$llama_accel" <<'PY'
import json, os, sys
m, model, seq, threads = sys.argv[1:5]
fp, fake, cpu, accel = (json.loads(x)["tokens_per_s"] for x in sys.argv[5:9])
llama = [json.loads(x)[0] for x in sys.argv[9:11]]
def size(p):
    return sum(os.path.getsize(os.path.join(p, f)) for f in os.listdir(p)) if os.path.isdir(p) else os.path.getsize(p)
fp_file = [os.path.join(r, f) for r, _, fs in os.walk(f"{m}/fp/checkpoints") for f in fs if f == "model.safetensors"][0]
rows = [
    ("fp32 (mixforge, libtorch)", size(fp_file), fp),
    ("cpu scheme, fake-quantized (QAT's forward)", None, fake),
    ("cpu scheme int4 (mixforge: int8 activations, _weight_int4pack_mm bf16)", size(f"{m}/cpu-int4"), cpu),
    ("accel scheme int4 (mixforge: _weight_int4pack_mm bf16)", size(f"{m}/accel-int4"), accel),
    ("cpu scheme GGUF Q4_0 (llama.cpp)", size(f"{m}/cpu.gguf"), llama[0]["avg_ts"]),
    ("accel scheme GGUF Q4_0 (llama.cpp)", size(f"{m}/accel.gguf"), llama[1]["avg_ts"]),
]
print(f"model {model}, one window of {seq} tokens per forward, {threads} threads")
print(f"| format | size on disk | forward tokens/s | vs fp32 |")
print(f"|---|---|---|---|")
for name, b, t in rows:
    s = f"{b / 1e6:.2f} MB" if b else "–"
    print(f"| {name} | {s} | {t:.0f} | {t / fp:.2f}× |")
PY
