# mixforge tasks. `just --list` shows them. Install just with `pip install rust-just`
# (or `cargo install just`); every recipe is also a plain script you can run without it.

# The main job: `mixforge run recipes/demo.toml`: corpus, shards, swarm, proposal, a tiny model trained on it, eval, report.
demo *ARGS:
    scripts/demo {{ARGS}}

# The data-mix simulator end to end: a swarm with replicated anchors, a proposal, then the proposal, uniform and natural trained at 4x the proxy tokens (8 seeds, paired differences with 95% intervals).
mix-experiment:
    scripts/mix-experiment

# How far the proposal moves across swarm seeds, with and without replicates, argmin vs bagged.
mix-stability:
    scripts/mix-stability

# Specialists annealed from the main job's model, merged by each method and search, scored per domain (3 seeds).
merge-experiment:
    scripts/merge-experiment

# Implicit positional distillation: a long-window teacher, a short-window student, then IPD (teacher over the window, or per document) vs CE on packed windows vs long documents vs nothing, at equal tokens (3 seeds).
ipd-experiment:
    scripts/ipd-experiment

# PTQ vs QAT (labels, self-distillation; fixed vs learnable scales) from one checkpoint, over seeds.
qat-experiment:
    scripts/qat-experiment

# Instruction tuning: natural vs uniform vs leave-one-out-reweighted instruction mixes from one base, at equal tokens (5 seeds).
sft-experiment:
    scripts/sft-experiment

# The test suite (what CI runs): rustfmt check and every test of the workspace.
test:
    scripts/test

# mixforge vs datatrove 0.10.1 on the shared corpus: MB/s per core, peak RSS, removed sets.
bench-corpus:
    bash bench/corpus.sh

# The corpus run at 10 MB, 100 MB and 1 GB (planted duplicates), one core: time, memory, fitted exponents.
bench-scale:
    bash bench/scale.sh

# A sharded corpus run against one process on the 100 MB corpus in 8 files: kept/ by the reduce vs by the tasks.
bench-sharded:
    bash bench/sharded.sh

# Fuzz every reader of user input: CPU-seconds per target (default 30 CPU-minutes), two at a time.
fuzz SECONDS="1800" *TARGETS:
    scripts/fuzz {{SECONDS}} {{TARGETS}}

# Lints: rustfmt and clippy with warnings as errors.
lint:
    cargo fmt --all --check
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:-/tmp}/.cache/mixforge-target}" cargo clippy --release --workspace --all-targets -- -D warnings

# mixforge vs Python tokenizers 0.23.3: tokens/s on the same documents, tokenizer and threads.
bench-tokenize:
    bash bench/tokenize.sh

# Peak memory of a distillation step at a 202,048-token vocabulary and 4,096 positions: chunked loss vs whole logits.
bench-kd-memory:
    bash bench/kd-memory.sh

# int4 exports: size and CPU forward speed against fp32 and llama.cpp's Q4_0 (builds llama.cpp once).
bench-int4:
    bash bench/int4.sh

# mixforge vs a PyTorch eager reference: tokens/s training the same model, batch and sequence.
bench-train:
    bash bench/train.sh
