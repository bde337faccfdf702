//! Command-line definitions (clap derive). Parsing only; `commands` turns these into library
//! configs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// mixforge: from a raw multi-domain corpus to a small, deployable language model.
#[derive(Debug, Parser)]
#[command(name = "mixforge", version, about, long_about = None)]
pub struct Cli {
    /// Worker threads for parallel stages (0 = one per core).
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline from a recipe: corpus, shards, swarm, proposal, training,
    /// evaluation, report. Resumable: finished stages with unchanged inputs are skipped.
    ///
    /// Example: mixforge run recipes/demo.toml --out runs/demo
    ///          mixforge run --preset quick --source web=web.jsonl --source code=code.jsonl --out runs/mine
    Run(PipelineArgs),
    /// Write RUN/report/index.html and report.md from a run's artifacts.
    Report(ReportArgs),
    /// Profile, filter and deduplicate a corpus.
    #[command(subcommand)]
    Corpus(CorpusCommand),
    /// Tokenizer tools.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Data-mix simulation: proxy swarms, surrogate fits, mix proposals, utility-weighted shards.
    #[command(subcommand)]
    Mix(MixCommand),
    /// Train a model on corpus shards by mixture (cross-entropy or distillation); resumable.
    ///
    /// Example: mixforge train --model tiny --shards runs/demo/shards --tokens 200000 --out runs/train
    Train(Box<TrainArgs>),
    /// Instruction-tune a checkpoint: conversations through the chat template, loss on the
    /// assistant's tokens only, examples packed without seeing each other; resumable.
    ///
    /// Example: mixforge sft --init runs/base --data dolly=dolly.jsonl --data math=gsm8k.jsonl --steps 300 --out runs/sft
    Sft(Box<SftArgs>),
    /// Evaluate a checkpoint: per-domain validation loss and task files (JSONL).
    Eval(EvalArgs),
    /// Continue a prompt with a checkpoint.
    Generate(GenerateArgs),
    /// Write a checkpoint as a Hugging Face directory (MinistralForCausalLM) that transformers
    /// loads, or a quantized one as packed int4 safetensors (`--int4`) or GGUF Q4_0 (`--gguf`).
    ///
    /// Example: mixforge export --checkpoint runs/qat --gguf --out runs/model.gguf
    Export(ExportArgs),
    /// Post-training quantization to int4 (the PTQ baseline): a checkpoint whose forward is
    /// fake-quantized under a deployment scheme; eval, generate, export and `train --init` take it.
    ///
    /// Example: mixforge quantize --checkpoint runs/base --scheme cpu --out runs/ptq-cpu
    Quantize(QuantizeArgs),
    /// Anneal specialists from one checkpoint in parallel, each on its own mixture, learning
    /// rate to 0; resumable.
    ///
    /// Example: mixforge anneal --init runs/base --shards runs/demo/shards --steps 500 --out runs/specialists
    Anneal(AnnealArgs),
    /// Merge checkpoints of one model by weighted parameter averaging (linear, task arithmetic,
    /// TIES) into a new checkpoint.
    ///
    /// Example: mixforge merge --checkpoint runs/code --checkpoint runs/math --weights 0.6,0.4 --out runs/merged
    Merge(MergeArgs),
    /// Teacher tools: cache a teacher's top-k log-probabilities for a training run's batches.
    #[command(subcommand)]
    Teacher(TeacherCommand),
    /// Needle-in-a-haystack items for long-context evaluation (score them with `eval --task`).
    #[command(subcommand)]
    Niah(NiahCommand),
    /// Model configurations.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Print the libtorch version, threads and devices this binary uses.
    Doctor,
}

/// `mixforge teacher ...`
#[derive(Debug, Subcommand)]
pub enum TeacherCommand {
    /// Run a teacher over the batches a `train` run with the same data flags will read, and
    /// write its top-k log-probabilities; `train --teacher-cache` then distils from them.
    ///
    /// Example: mixforge teacher cache --teacher runs/teacher --shards runs/demo/shards --seq-len 512 --steps 100 --top-k 64 --out runs/cache
    Cache(TeacherCacheArgs),
}

/// `teacher cache` flags: the data flags mean what they mean for `train`.
#[derive(Debug, Args)]
pub struct TeacherCacheArgs {
    #[arg(long)]
    pub teacher: PathBuf,
    #[arg(long)]
    pub shards: PathBuf,
    #[arg(long)]
    pub mix: Option<PathBuf>,
    #[arg(long, conflicts_with = "tokens", required_unless_present = "tokens")]
    pub steps: Option<u64>,
    #[arg(long)]
    pub tokens: Option<u64>,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub doc_mask: bool,
    #[arg(long)]
    pub reset_positions: bool,
    #[arg(long, value_enum, default_value_t = TeacherPackingArg::Same)]
    pub teacher_packing: TeacherPackingArg,
    #[arg(long, value_enum, default_value_t = CapPolicyArg::Warn)]
    pub cap_policy: CapPolicyArg,
    /// Log-probabilities kept per position (the vocabulary size keeps them all).
    #[arg(long, default_value_t = 64)]
    pub top_k: usize,
    /// The distillation temperature the run will use.
    #[arg(long, default_value_t = 1.0)]
    pub kd_temperature: f64,
    /// Cache directory.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// `mixforge niah ...`
#[derive(Debug, Subcommand)]
pub enum NiahCommand {
    /// Write passkey items: a random 5-digit key stated in real filler text at each depth, asked
    /// for at the end, with distractor keys of the same token length.
    ///
    /// Example: mixforge niah make --filler runs/demo/shards --lengths 256,512 --per-cell 10 --out niah.jsonl
    Make(NiahMakeArgs),
}

/// `niah make` flags.
#[derive(Debug, Args)]
pub struct NiahMakeArgs {
    /// Filler: a shards directory (its validation documents, decoded) or a text file.
    #[arg(long)]
    pub filler: PathBuf,
    /// With shards: only this domain's documents.
    #[arg(long)]
    pub domain: Option<String>,
    /// Tokenizer (tokenizer.json) that counts lengths; default: the shards' own. Required with
    /// a text file.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Item lengths in tokens (prompt and key).
    #[arg(long, value_delimiter = ',', default_value = "256,512,1024")]
    pub lengths: Vec<usize>,
    /// Needle depths, 0 (start of the filler) to 1 (its end).
    #[arg(long, value_delimiter = ',', default_value = "0,0.25,0.5,0.75,1")]
    pub depths: Vec<f64>,
    /// Items per (length, depth).
    #[arg(long, default_value_t = 10)]
    pub per_cell: usize,
    /// Distractor keys per item (rank accuracy by chance: 1 / (distractors + 1)).
    #[arg(long, default_value_t = 9)]
    pub distractors: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output JSONL.
    #[arg(long)]
    pub out: PathBuf,
}

/// `mixforge model ...`
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Print a model's exact parameter count and shape.
    Params(ModelParamsArgs),
    /// Measure a checkpoint's forward speed on the CPU (tokens/s; full precision, fake-quantized
    /// or an int4 export), with the threads libtorch uses here.
    ///
    /// Example: mixforge model speed --checkpoint runs/export/int4 --seq-len 256
    Speed(ModelSpeedArgs),
}

/// `model speed` flags.
#[derive(Debug, Args)]
pub struct ModelSpeedArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Windows per forward.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Measure for at least this long (after one warm-up forward).
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Chooses a model: a preset or a TOML config file.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ModelChoice {
    /// A preset: tiny, proxy-5m, proxy-12m, teacher-50m, mobilellm-pro-1b.
    #[arg(long)]
    pub preset: Option<String>,
    /// A model config TOML (every field of a preset; see docs/formats.md).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `model params` flags.
#[derive(Debug, Args)]
pub struct ModelParamsArgs {
    #[command(flatten)]
    pub model: ModelChoice,
}

/// `train` flags.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Model preset name or config TOML; the vocabulary follows the shards' tokenizer.
    #[arg(long, default_value = "tiny", conflicts_with = "init")]
    pub model: String,
    /// Start from this checkpoint's weights (a mixforge run or step directory, or a Hugging Face
    /// directory) with a fresh optimizer and schedule; its model config is used, and the
    /// lineage (parent, its fingerprint, the phase) is recorded in the run.
    #[arg(long, value_name = "CKPT")]
    pub init: Option<PathBuf>,
    /// What this run is, recorded in its checkpoints (pretrain, anneal, long-context, …).
    #[arg(long, default_value = "pretrain")]
    pub phase: String,
    /// Token shards written by `corpus shard` / `corpus run`.
    #[arg(long)]
    pub shards: PathBuf,
    /// Mixture: a TOML file with a `[weights]` table (e.g. a mix proposal), or `natural` (token
    /// proportions, the default) or `uniform`.
    #[arg(long)]
    pub mix: Option<PathBuf>,
    /// Optimizer steps.
    #[arg(long, conflicts_with = "tokens", required_unless_present_any = ["tokens", "resume"])]
    pub steps: Option<u64>,
    /// Training tokens (rounded up to whole steps).
    #[arg(long)]
    pub tokens: Option<u64>,
    /// Run directory: metrics.jsonl, checkpoints/.
    #[arg(long)]
    pub out: PathBuf,
    /// Distil from this teacher: a mixforge checkpoint or a Hugging Face Llama/Mistral/Ministral
    /// directory; `self` is the --init checkpoint in full precision (QAT's self-distillation).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Quantization-aware training: the student is the --init checkpoint fake-quantized under
    /// this scheme (straight-through gradients; the accel scheme learns its scales).
    #[arg(long, value_enum, requires = "init")]
    pub qat: Option<SchemeArg>,
    /// With --qat accel: keep the per-channel scales fixed at their absmax start (the ablation).
    #[arg(long, requires = "qat")]
    pub fixed_scales: bool,
    /// Distil from a teacher's cached top-k (`mixforge teacher cache` with this run's data flags).
    #[arg(long, conflicts_with = "teacher")]
    pub teacher_cache: Option<PathBuf>,
    /// Continue from the run's latest checkpoint (starts fresh when there is none).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 20)]
    pub warmup: u64,
    /// Final learning rate as a fraction of the peak (cosine decay).
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Seed of the initial weights and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Validate every N steps (0 = at the end only).
    #[arg(long, default_value_t = 0)]
    pub eval_every: u64,
    /// Validation sequences per domain.
    #[arg(long, default_value_t = 16)]
    pub eval_sequences: usize,
    /// Checkpoint every N steps (0 = at the end only).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Attend only within each packed document.
    #[arg(long)]
    pub doc_mask: bool,
    /// Restart position ids at each packed document. Off for long-context distillation: with a
    /// document mask and reset positions, RoPE never sees a distance longer than a document.
    #[arg(long)]
    pub reset_positions: bool,
    /// RoPE base θ (default: the model's; a long-context phase may raise it).
    #[arg(long)]
    pub rope_theta: Option<f64>,
    /// What the teacher sees of a packed window: `same` (the student's tokens, positions and
    /// mask: implicit positional distillation) or `per-doc` (each document alone).
    #[arg(long, value_enum, default_value_t = TeacherPackingArg::Same)]
    pub teacher_packing: TeacherPackingArg,
    /// What to do when a domain is read past its mixture's epoch cap.
    #[arg(long, value_enum, default_value_t = CapPolicyArg::Warn)]
    pub cap_policy: CapPolicyArg,
    /// Distillation temperature.
    #[arg(long, default_value_t = 1.0)]
    pub kd_temperature: f64,
    /// Weight of cross-entropy added to the distillation loss.
    #[arg(long, default_value_t = 0.0)]
    pub ce_weight: f64,
    /// auto (CUDA when present), cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// What a teacher sees of a packed window.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TeacherPackingArg {
    Same,
    PerDoc,
}

/// Epoch-cap policy.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CapPolicyArg {
    Warn,
    Stop,
}

/// `eval` flags.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A checkpoint (step directory or run directory) or a Hugging Face model directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Task files (JSONL) to score; repeatable.
    #[arg(long = "task")]
    pub tasks: Vec<PathBuf>,
    /// Score only the first N items of each task.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Shards for validation loss (default: the ones the checkpoint was trained on).
    #[arg(long)]
    pub shards: Option<PathBuf>,
    /// Validation sequences per domain.
    #[arg(long, default_value_t = 16)]
    pub eval_sequences: usize,
    /// Validation window in tokens (default: the checkpoint's training window).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Also report validation loss by position in the window, in this many buckets.
    #[arg(long)]
    pub by_position: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Ask generation tasks (GSM8K-style question/answer, context/answer) through the chat
    /// template and check the assistant's reply: for instruction-tuned checkpoints.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// `generate` flags.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The prompt (with --chat: the user's message).
    pub prompt: String,
    /// Send the prompt as a user turn through the chat template and print the assistant's
    /// reply (stops at <|im_end|>): for instruction-tuned checkpoints (`mixforge sft`).
    #[arg(long)]
    pub chat: bool,
    /// With --chat: a system turn before the user's.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub top_k: i64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// `export` flags.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A mixforge run or step directory (quantized, for --int4 and --gguf).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output directory (config.json, model.safetensors, tokenizer.json), or the .gguf file.
    #[arg(long)]
    pub out: PathBuf,
    /// Packed int4 codes and fp16 scales (mixforge-int4 v1), run by libtorch's int4 CPU kernels
    /// in `eval` and `generate`. The checkpoint must be quantized (PTQ or QAT).
    #[arg(long, conflicts_with = "gguf")]
    pub int4: bool,
    /// One GGUF file for llama.cpp (`llama` architecture, Q4_0 matrices holding the checkpoint's
    /// own codes and scales). The checkpoint must be quantized (PTQ or QAT).
    #[arg(long)]
    pub gguf: bool,
}

/// `quantize` flags.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// A full-precision mixforge checkpoint (run or step directory).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// cpu: int4 weights per group of 32 + int8 dynamic activations; accel: int4 weights per
    /// channel (learnable scales in QAT), untied LM head.
    #[arg(long, value_enum)]
    pub scheme: SchemeArg,
    /// Leave the token embedding and LM head in full precision.
    #[arg(long)]
    pub keep_embeddings: bool,
    /// Output run directory (checkpoints/step-00000000 with the scheme in its model config).
    #[arg(long)]
    pub out: PathBuf,
}

/// A quantization scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemeArg {
    Cpu,
    Accel,
}

/// `mixforge mix ...`
#[derive(Debug, Subcommand)]
pub enum MixCommand {
    /// Import a RegMix-format swarm (mixtures CSV + metrics CSV, paired by `index`) as a runs table.
    ///
    /// Example: mixforge mix import --mixtures train_mixture_1m.csv --metrics train_pile_loss_1m.csv --out runs.csv
    Import(MixImportArgs),
    /// Fit a surrogate predicting one metric from mixture weights; prints 5-fold CV scores.
    ///
    /// Example: mixforge mix fit --runs runs.csv --target the_pile_pile_cc_val_loss --out model.json
    Fit(MixFitArgs),
    /// Predict a metric for mixtures (RegMix mixtures format) with a fitted model.
    ///
    /// Writes `index,predicted` (and `std` when the model has bootstrap members).
    /// Example: mixforge mix predict --model model.json --mixtures test_mixture_1m.csv --out pred.csv
    Predict(MixPredictArgs),
    /// Design a swarm of proxy mixtures around a prior and train a small proxy on each.
    ///
    /// Repetition-matched: each proxy reads only proxy/target of every domain, so it repeats each
    /// domain as often as the target run will. Finished runs go to OUT/runs.csv (and .parquet) as
    /// they finish; rerunning the same command resumes. Example:
    /// mixforge mix swarm --shards runs/demo/shards --runs 24 --proxy-tokens 250000 --target-tokens 1000000 --out runs/swarm
    Swarm(MixSwarmArgs),
    /// Fit a surrogate per objective metric on a runs table and propose the mixture that minimises
    /// the objective within the epoch caps; writes the proposal TOML and per-domain utility.
    ///
    /// Example: mixforge mix propose --runs runs/swarm/runs.csv --shards runs/demo/shards --target-tokens 1000000 --out proposal.toml
    Propose(MixProposeArgs),
    /// Leave-one-out instruction mixing: D + 1 short fine-tunes from one checkpoint (all domains;
    /// each domain left out), the Δ matrix (what removing a domain costs per metric), and new
    /// weights by a stated rule, written as a mixture TOML that `sft --mix` reads. Resumable.
    ///
    /// Example: mixforge mix loo --init runs/base --data qa=ni-qa/ --data code=mbpp.jsonl --steps 100 --out runs/loo
    Loo(Box<MixLooArgs>),
    /// Write a proposal out as shards: each domain's share of --tokens, shuffled, within its caps.
    ///
    /// Example: mixforge mix materialize --proposal proposal.toml --shards runs/demo/shards --tokens 1000000 --out runs/mixed
    Materialize(MixMaterializeArgs),
}

/// The mixture budget: target size, caps and floors.
#[derive(Debug, Args)]
pub struct BudgetArgs {
    /// Token shards (from `corpus run` / `corpus shard`).
    #[arg(long)]
    pub shards: PathBuf,
    /// Training tokens of the run the mixture is for.
    #[arg(long)]
    pub target_tokens: u64,
    /// Most epochs any domain may be read at the target budget (0: uncapped).
    #[arg(long, default_value_t = 4.0)]
    pub max_epochs: f64,
    /// Smallest weight every domain keeps (0 lets a domain drop out).
    #[arg(long, default_value_t = 0.0)]
    pub min_weight: f64,
    /// Centre of the swarm's draws and of the KL term: natural, uniform, or a TOML file with a [weights] table.
    #[arg(long, default_value = "natural")]
    pub prior: String,
}

/// `mix swarm` flags.
#[derive(Debug, Args)]
pub struct MixSwarmArgs {
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// Swarm directory (plan, design, runs table); reused to resume.
    #[arg(long)]
    pub out: PathBuf,
    /// Proxies in the swarm, the anchors (prior, natural, uniform, UniMax) included.
    #[arg(long, default_value_t = 24)]
    pub runs: usize,
    /// Training tokens per proxy.
    #[arg(long, default_value_t = 250_000)]
    pub proxy_tokens: u64,
    /// Dirichlet concentration multipliers cycled over the draws (small: extreme mixtures).
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,1,2,4")]
    pub concentrations: Vec<f64>,
    /// Proxy model preset or config TOML.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Proxy sequence length.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Proxy batch size (sequences).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Proxy peak learning rate.
    #[arg(long, default_value_t = 1e-2)]
    pub lr: f64,
    /// Validation sequences per domain.
    #[arg(long, default_value_t = 32)]
    pub eval_sequences: usize,
    /// Task file scored after each proxy (repeatable); adds `<task>_acc` metrics.
    #[arg(long)]
    pub task: Vec<PathBuf>,
    /// Items per task.
    #[arg(long)]
    pub task_limit: Option<usize>,
    /// Each anchor mixture (prior, natural, uniform, UniMax) is trained this many times in all,
    /// with seeds SEED, SEED+1, …: the spread measures seed noise, which `mix propose` puts in
    /// its intervals (1: no replicates, noise unmeasured).
    #[arg(long, default_value_t = 3)]
    pub replicates: usize,
    /// Proxies trained at once, each on one thread (0 = one per core, or per --threads). One
    /// thread per proxy keeps the runs table the same bytes whatever --jobs and --threads.
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Seed of the design and of every proxy.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `mix propose` flags.
#[derive(Debug, Args)]
pub struct MixProposeArgs {
    /// Runs table (from `mix swarm` or `mix import`).
    #[arg(long)]
    pub runs: PathBuf,
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// Objective term METRIC[=WEIGHT] (repeatable); minimised, so give accuracies a negative
    /// weight. Default: the mean of every `<domain>_val_loss`, one surrogate per domain.
    #[arg(long)]
    pub objective: Vec<String>,
    /// Surrogate per metric.
    #[arg(long, value_enum, default_value_t = SurrogateArg::Auto)]
    pub surrogate: SurrogateArg,
    /// Bootstrap members per metric, for the prediction intervals (0: none).
    #[arg(long, default_value_t = 16)]
    pub bootstrap: usize,
    /// Strength of KL(proposal ‖ prior) added to the objective.
    #[arg(long, default_value_t = 0.0)]
    pub kl_weight: f64,
    /// Minimise objective + RISK × its bootstrap std, so the proposal stays where the swarm
    /// gives evidence (0: the predicted mean only). Used by --aggregate argmin.
    #[arg(long, default_value_t = 1.0)]
    pub risk: f64,
    /// How the mixture is chosen from the surrogates and their bootstrap members.
    #[arg(long, value_enum, default_value_t = AggregateArg::Argmin)]
    pub aggregate: AggregateArg,
    /// Round each domain's tokens to a multiple of this (default: target / 1000).
    #[arg(long)]
    pub quantum_tokens: Option<u64>,
    /// Seed of the search.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Proposal TOML to write; its utility table goes beside it (`<name>.utility.csv`).
    #[arg(long)]
    pub out: PathBuf,
}

/// `mix materialize` flags.
#[derive(Debug, Args)]
pub struct MixMaterializeArgs {
    /// Proposal TOML (from `mix propose`).
    #[arg(long)]
    pub proposal: PathBuf,
    /// Source token shards.
    #[arg(long)]
    pub shards: PathBuf,
    /// Training tokens to write (EOS separators included).
    #[arg(long)]
    pub tokens: u64,
    /// Output shard directory (replaced when it exists).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Documents per written shard file.
    #[arg(long, default_value_t = 8192)]
    pub chunk_docs: usize,
}

/// `mix import` flags.
#[derive(Debug, Args)]
pub struct MixImportArgs {
    /// Mixtures CSV: `index`, then one `train_<domain>` weight column per domain.
    #[arg(long)]
    pub mixtures: PathBuf,
    /// Metrics CSV: `index`, then `metric/<name>` columns.
    #[arg(long)]
    pub metrics: PathBuf,
    /// Runs table to write (CSV).
    #[arg(long)]
    pub out: PathBuf,
}

/// `mix fit` flags.
#[derive(Debug, Args)]
pub struct MixFitArgs {
    /// Runs table (from `mix import`).
    #[arg(long)]
    pub runs: PathBuf,
    /// Metric to predict, as in the metrics file without `metric/` (e.g. the_pile_pile_cc_val_loss).
    #[arg(long)]
    pub target: String,
    /// Surrogate: auto (see below), gbdt, mixing-law, linear, ensemble.
    #[arg(long, value_enum, default_value_t = SurrogateArg::Auto)]
    pub surrogate: SurrogateArg,
    /// Bootstrap members refitted on resampled runs; their spread is the `std` of predictions (0: none).
    #[arg(long, default_value_t = 16)]
    pub bootstrap: usize,
    /// Model file to write (JSON).
    #[arg(long)]
    pub out: PathBuf,
}

/// `--aggregate` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AggregateArg {
    /// The minimiser of the surrogates' prediction (+ risk × bootstrap std).
    Argmin,
    /// The mean of each bootstrap member's minimiser. Measured on the demo corpus it moved
    /// more across swarm seeds than argmin, not less (README, scripts/mix-stability).
    Bagged,
}

/// `--surrogate` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SurrogateArg {
    /// The best 5-fold CV Spearman among candidates with CV MAE within 1.5× the best; near-ties go to the law, then the ensemble.
    Auto,
    /// Gradient-boosted regression trees.
    Gbdt,
    /// y = c + exp(Σ t_j w_j), robust fit with restarts.
    MixingLaw,
    /// Ridge regression on the weights.
    Linear,
    /// Mean of trees and the mixing law.
    Ensemble,
}

/// `mix predict` flags.
#[derive(Debug, Args)]
pub struct MixPredictArgs {
    /// Model file (from `mix fit`).
    #[arg(long)]
    pub model: PathBuf,
    /// Mixtures to predict (RegMix mixtures format).
    #[arg(long)]
    pub mixtures: PathBuf,
    /// Predictions CSV to write: `index,predicted`.
    #[arg(long)]
    pub out: PathBuf,
}

/// `mixforge tokenizer ...`
#[derive(Debug, Subcommand)]
pub enum TokenizerCommand {
    /// Time encoding a JSONL file's texts with a tokenizer.json: tokens/s and MB/s.
    ///
    /// Loads every `text` field first, warms up, then encodes them all --runs times (in
    /// parallel over documents; --threads bounds it) and prints the median.
    ///
    /// Example: mixforge --threads 2 tokenizer bench --tokenizer tokenizer.json --input docs.jsonl
    Bench(TokenizerBenchArgs),
}

/// `tokenizer bench` flags.
#[derive(Debug, Args)]
pub struct TokenizerBenchArgs {
    /// The tokenizer.json.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// JSONL with a `text` field per line.
    #[arg(long)]
    pub input: PathBuf,
    /// Timed runs (after one warm-up on 50 documents).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Add the tokenizer's special tokens (e.g. BOS), as Python's encode_batch does by default.
    #[arg(long)]
    pub add_special_tokens: bool,
    /// Encode with `tokenizers`' pipeline even where the piecewise encoder (SentencePiece-style
    /// BPE, the same ids) applies: to compare the two.
    #[arg(long)]
    pub pipeline: bool,
}

/// `mixforge corpus ...`
#[derive(Debug, Subcommand)]
pub enum CorpusCommand {
    /// Run every corpus stage: ingest → profile → filter → dedup.
    ///
    /// Reads the sources named in RECIPE (or given with --source), writes into --out:
    /// kept/<domain>.parquet, profile.parquet, summary.parquet/.json, manifest.json and
    /// rejects.jsonl, and prints a per-domain summary.
    ///
    /// Example: mixforge corpus run recipes/demo.toml --out runs/demo
    Run(RunArgs),
    /// Finish a sharded run: exact and near duplicates across every part, then the outputs of
    /// a single-process run (kept/, profile, summary, manifest, rejects) in OUT.
    ///
    /// The parts come from `corpus run … --shard I/N --out OUT`, one per I in 0..N (on one
    /// machine or as a Slurm array); the result equals `corpus run … --out OUT` but for timings.
    ///
    /// Example: for i in 0 1 2 3; do mixforge corpus run recipes/demo.toml --shard $i/4 --out runs/d; done;
    /// mixforge corpus reduce --out runs/d
    Reduce(ReduceArgs),
    /// After `corpus reduce --finish-by-shard`: write the kept documents task by task, then merge.
    ///
    /// With --shard I/N, task I reads its input files again and writes its share of every kept
    /// file (compressed) and its examples into OUT/kept-parts; a task already done for this
    /// reduce does nothing. Without --shard, once every task is done, their shares become
    /// kept/<domain>.parquet (the bytes `corpus reduce` alone writes), examples.jsonl and
    /// manifest.json.
    ///
    /// Example: mixforge corpus reduce --out runs/d --finish-by-shard; for i in 0 1 2 3; do mixforge
    /// corpus finish --out runs/d --shard $i/4; done; mixforge corpus finish --out runs/d
    Finish(FinishArgs),
    /// Run a corpus on a Slurm cluster: a job array for the first pass (one part per task,
    /// --tasks of them), the reduce after it (--dependency=afterok), a job array writing the
    /// kept documents (each task its own files') and their merge, and when the recipe asks for
    /// [shards] a job array that tokenizes them and a finish job (shards' manifest, and the
    /// [search] index); logs per task.
    ///
    /// Writes OUT/parts/config.json and OUT/slurm/{map,reduce,kept,merge,tokens,finish}.sbatch,
    /// then submits them with sbatch. Run it again after failures: only the map tasks whose part
    /// is missing or stale are resubmitted, and kept and tokens tasks reuse their finished work.
    /// --dry-run prints the scripts and sbatch commands instead.
    ///
    /// Example: mixforge corpus slurm recipes/demo.toml --tasks 4 --out /shared/runs/demo --partition cpu
    Slurm(SlurmArgs),
    /// Read and validate sources only; write kept/ (every readable document), rejects and
    /// accounting.
    Ingest(RunArgs),
    /// Ingest and profile: per-document signals and the per-domain summary.
    Profile(RunArgs),
    /// Ingest, profile and apply the quality rules (annotate by default, --filter-mode drop
    /// to remove).
    Filter(RunArgs),
    /// Ingest and deduplicate (exact + MinHash-LSH), without signals or quality rules.
    Dedup(RunArgs),
    /// Ingest and mark documents containing evaluation items (--eval FILE, repeatable).
    ///
    /// Example: mixforge corpus decontam recipes/demo.toml --eval ../shared/data/eval/gsm8k-test.jsonl
    Decontam(RunArgs),
    /// Tokenize a run's kept documents into training shards.
    ///
    /// Writes SHARDS/<domain>/{train,val}-NNNNN.{bin,idx}, SHARDS/tokenizer.json and
    /// SHARDS/manifest.json. Resumable: a rerun skips finished chunks. Shardable: tasks
    /// `--shard I/N` tokenize every N-th chunk (on other nodes, at once once the tokenizer is
    /// written by `--tokenizer-only`), then a run without --shard checks them and writes the
    /// manifest.
    ///
    /// Example: mixforge corpus shard --in runs/demo --vocab-size 8192 --out runs/demo/shards
    Shard(ShardArgs),
    /// Print a document's text decoded from its shard tokens.
    ///
    /// Example: mixforge corpus decode --shards runs/demo/shards --doc 3:17
    Decode(DecodeArgs),
    /// Build a full-text search index over a run's kept documents.
    ///
    /// Example: mixforge corpus index --in runs/demo --out runs/demo/index
    Index(IndexArgs),
    /// Search an index: ids, domains, scores and snippets.
    ///
    /// Example: mixforge corpus search --index runs/demo/index "post office stamps" --domain math
    Search(SearchArgs),
}

/// `corpus shard` flags.
#[derive(Debug, Args)]
pub struct ShardArgs {
    /// A corpus run directory (holding kept/).
    #[arg(long = "in", value_name = "DIR")]
    pub input: PathBuf,
    /// Shard directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// A tokenizer.json to use (e.g. a Llama or GPT-NeoX tokenizer).
    #[arg(long, conflicts_with = "vocab_size", required_unless_present = "vocab_size")]
    pub tokenizer: Option<PathBuf>,
    /// Train a byte-level BPE of this vocabulary size on a sample of the kept documents.
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Documents per domain sampled to train the tokenizer.
    #[arg(long, default_value_t = 2000)]
    pub sample_docs: usize,
    /// Fraction of documents held out for validation (by document-id hash).
    #[arg(long, default_value_t = 0.05)]
    pub val_fraction: f64,
    /// Seed of the split hash.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Documents per chunk, the unit a resumed run skips.
    #[arg(long, default_value_t = 8192)]
    pub chunk_docs: usize,
    /// Do one task of a sharded tokenization: chunks I, I+N, I+2N, … of all domains' chunks in
    /// order, no manifest. A later run without --shard (same flags) checks every chunk and
    /// writes the manifest. In a Slurm array: --shard ${SLURM_ARRAY_TASK_ID}/N.
    #[arg(long, value_name = "I/N", conflicts_with = "tokenizer_only")]
    pub shard: Option<String>,
    /// Only write OUT/tokenizer.json (copied, or trained on the sample) and stop: run it before
    /// --shard tasks that start at once, so they share one tokenizer instead of each training it.
    #[arg(long)]
    pub tokenizer_only: bool,
}

/// `corpus decode` flags.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Shard directory.
    #[arg(long)]
    pub shards: PathBuf,
    /// Document id, as FILE:ROW (as printed) or the raw number of profile.parquet's doc_id.
    #[arg(long)]
    pub doc: String,
}

/// `corpus index` flags.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// A corpus run directory (holding kept/ and profile.parquet).
    #[arg(long = "in", value_name = "DIR")]
    pub input: PathBuf,
    /// Index directory (replaced if it exists).
    #[arg(long)]
    pub out: PathBuf,
}

/// `corpus search` flags.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Index directory.
    #[arg(long)]
    pub index: PathBuf,
    /// Query: words (any may match; ranked by BM25), "a phrase", +required, -excluded.
    pub query: String,
    /// Only this domain.
    #[arg(long)]
    pub domain: Option<String>,
    /// Most results.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// One JSON object per line (doc_id, doc, source_id, domain, score, words, snippet).
    #[arg(long)]
    pub json: bool,
}

/// `mixforge corpus slurm`.
#[derive(Debug, Args)]
pub struct SlurmArgs {
    /// The corpus run: recipe, sources, --out (on storage every node sees) and stage flags.
    #[command(flatten)]
    pub run: RunArgs,
    /// Tasks in each array (first pass, kept documents, tokens); task I reads the I-th of N
    /// contiguous runs of the input files.
    #[arg(long)]
    pub tasks: u32,
    /// Slurm partition [default: the cluster's default].
    #[arg(long)]
    pub partition: Option<String>,
    /// CPUs per map task (each task's --threads).
    #[arg(long, default_value_t = 1)]
    pub cpus_per_task: u32,
    /// CPUs of the one-node jobs: the reduce (it verifies candidates on all of them), the merge
    /// and the last job [default: --cpus-per-task].
    #[arg(long)]
    pub reduce_cpus: Option<u32>,
    /// Memory of the reduce job, as sbatch --mem takes it (it holds every part's records:
    /// about 0.9 GB per million documents) [default: the cluster's].
    #[arg(long)]
    pub reduce_mem: Option<String>,
    /// Time limit per job, as sbatch takes it.
    #[arg(long, default_value = "4:00:00")]
    pub time: String,
    /// An option for every sbatch call, as sbatch takes it (repeatable), e.g.
    /// `--sbatch-arg=--account=lab --sbatch-arg=--qos=low`.
    #[arg(long = "sbatch-arg", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Print the scripts and sbatch commands; write and submit nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `mixforge corpus reduce`.
#[derive(Debug, Args)]
pub struct ReduceArgs {
    /// The sharded run's directory (holding parts/).
    #[arg(long)]
    pub out: PathBuf,
    /// Leave the kept documents to N finish tasks (`corpus finish --out OUT --shard I/N`, each
    /// writing its own files' share) and their merge (`corpus finish --out OUT`), instead of
    /// writing them here; OUT has no manifest.json until the merge.
    #[arg(long)]
    pub finish_by_shard: bool,
    /// Print manifest.json instead of the summary.
    #[arg(long, conflicts_with = "finish_by_shard")]
    pub json: bool,
}

/// `mixforge corpus finish`.
#[derive(Debug, Args)]
pub struct FinishArgs {
    /// The sharded run's directory (reduced with --finish-by-shard).
    #[arg(long)]
    pub out: PathBuf,
    /// Write task I's share of the kept files (its own input files, read again) into
    /// OUT/kept-parts; without it, merge every task's share into kept/ and write the manifest.
    /// In a Slurm array: --shard ${SLURM_ARRAY_TASK_ID}/N.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Print manifest.json instead of the summary (the merge only).
    #[arg(long, conflicts_with = "shard")]
    pub json: bool,
}

/// Inputs, outputs and stage settings shared by the corpus commands. Flags override the recipe.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Recipe (TOML) naming sources and stage settings; see docs/formats.md.
    pub recipe: Option<PathBuf>,
    /// A source as DOMAIN=PATH_OR_GLOB (repeatable); replaces the recipe's sources.
    ///
    /// The format comes from the extension (.jsonl, .parquet, .txt, each optionally .gz or
    /// .zst); JSON records use their `text` and `id` fields.
    #[arg(long = "source", value_name = "DOMAIN=PATH")]
    pub sources: Vec<String>,
    /// Output directory (created if missing) [default: runs/corpus].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Do one part of a sharded run: the first pass (read, profile, rules, dedup keys) over
    /// the I-th of N contiguous runs of the input files into OUT/parts; `corpus reduce --out OUT` finishes once all N
    /// parts exist. In a Slurm array: --shard ${SLURM_ARRAY_TASK_ID}/N. Without a recipe or
    /// --source, the settings come from OUT/parts/config.json (as `corpus slurm` writes it).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Fail on the first malformed record, naming file:line, instead of counting it.
    #[arg(long)]
    pub strict: bool,
    /// Quality rules: annotate (record failures, keep), drop (remove failures), off.
    #[arg(long, value_enum)]
    pub filter_mode: Option<FilterModeArg>,
    /// Near-duplicate Jaccard threshold [recipe or 0.8].
    #[arg(long)]
    pub threshold: Option<f64>,
    /// MinHash permutations [recipe or 128].
    #[arg(long)]
    pub num_perm: Option<usize>,
    /// LSH bands; with --rows, overrides the choice made from --threshold.
    #[arg(long, requires = "rows")]
    pub bands: Option<usize>,
    /// Rows per LSH band.
    #[arg(long, requires = "bands")]
    pub rows: Option<usize>,
    /// Words per shingle [recipe or 5].
    #[arg(long)]
    pub ngram: Option<usize>,
    /// Merge LSH candidates without checking their exact Jaccard.
    #[arg(long)]
    pub no_verify: bool,
    /// Skip near-duplicate (MinHash) detection.
    #[arg(long)]
    pub no_minhash: bool,
    /// Skip exact-duplicate detection.
    #[arg(long)]
    pub no_exact: bool,
    /// Dedup across the whole corpus or within each domain.
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// Seed of the MinHash permutations.
    #[arg(long)]
    pub seed: Option<u64>,
    /// An evaluation set (JSONL) to decontaminate against (repeatable; the benchmark name is
    /// the file stem). Adds to the recipe's [decontam] evals.
    #[arg(long = "eval", value_name = "FILE")]
    pub evals: Vec<std::path::PathBuf>,
    /// Words per decontamination n-gram [recipe or 13].
    #[arg(long)]
    pub decontam_ngram: Option<usize>,
    /// Drop contaminated documents instead of only marking them.
    #[arg(long)]
    pub drop_contaminated: bool,
    /// Print the manifest as JSON on stdout instead of the summary table.
    #[arg(long)]
    pub json: bool,
}

/// `--filter-mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FilterModeArg {
    /// Record failed rules in the profile; keep the document.
    Annotate,
    /// Drop documents failing any rule.
    Drop,
    /// Do not evaluate rules.
    Off,
}

/// `--scope` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// Any two documents may be duplicates.
    Global,
    /// Only documents of the same domain.
    PerDomain,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}

/// `run` flags.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Recipe TOML: sources, corpus settings and the [shards], [swarm], [propose], [train],
    /// [eval], [report] sections (every key has a default; see docs/formats.md).
    pub recipe: Option<PathBuf>,
    /// A source as DOMAIN=PATH_OR_GLOB (repeatable); replaces the recipe's sources.
    #[arg(long = "source", value_name = "DOMAIN=PATH")]
    pub sources: Vec<String>,
    /// Sizes under the recipe: demo (the recipe defaults, ~10 minutes on 2 cores for the demo
    /// corpus) or quick (a minute or two: a first look, tests).
    #[arg(long, value_enum, default_value_t = PresetArg::Demo)]
    pub preset: PresetArg,
    /// Rerun this stage and every stage after it, whatever their records say.
    #[arg(long, value_name = "STAGE")]
    pub from: Option<String>,
    /// Run directory: one folder per stage, stages/*.json records, report/.
    #[arg(long)]
    pub out: PathBuf,
}

/// Run presets.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PresetArg {
    Demo,
    Quick,
}

/// `report` flags.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run directory (from `mixforge run`).
    pub run: PathBuf,
}

/// `merge` flags.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// A checkpoint to merge (run or step directory); repeatable.
    #[arg(long = "checkpoint", required = true)]
    pub checkpoints: Vec<PathBuf>,
    /// One weight per checkpoint, comma-separated (default: equal weights summing to 1).
    #[arg(long, value_delimiter = ',', conflicts_with = "search")]
    pub weights: Vec<f64>,
    /// Choose the weights on a probe split instead: a simplex grid, a greedy soup, or the
    /// simulator's surrogates fitted on a seeded design (OUT/search.json has every point).
    #[arg(long, value_enum)]
    pub search: Option<SearchArg>,
    /// Probe sequences are taken past the first N validation sequences of each domain, so they
    /// never overlap what `eval --eval-sequences N` (or less) scores.
    #[arg(long, default_value_t = 64)]
    pub probe_after: usize,
    /// Probe sequences per domain.
    #[arg(long, default_value_t = 16)]
    pub probe_sequences: usize,
    /// Probe sequence length.
    #[arg(long, default_value_t = 128)]
    pub probe_seq_len: usize,
    /// Shards for the probe (default: those the first checkpoint was trained on).
    #[arg(long)]
    pub probe_shards: Option<PathBuf>,
    /// Grid search: coordinates in multiples of 1/N.
    #[arg(long, default_value_t = 4)]
    pub grid_steps: usize,
    /// Surrogate search: merges measured to fit it (default 2 × checkpoints + 4).
    #[arg(long)]
    pub design: Option<usize>,
    /// Surrogate search: seed of the design and the candidates.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// linear: Σ wᵢ θᵢ; task-arithmetic: base + Σ wᵢ (θᵢ − base); ties: trimmed, sign-elected
    /// task vectors.
    #[arg(long, value_enum, default_value_t = MergeMethodArg::Linear)]
    pub method: MergeMethodArg,
    /// The common ancestor (task-arithmetic, ties).
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// TIES: the share of each task vector's entries kept, by magnitude.
    #[arg(long, default_value_t = 0.5)]
    pub density: f64,
    /// Where the merged checkpoint goes (a run directory: checkpoints/step-00000000).
    #[arg(long)]
    pub out: PathBuf,
}

/// Merge weight searches.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SearchArg {
    Grid,
    GreedySoup,
    Surrogate,
}

/// Merge methods.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MergeMethodArg {
    Linear,
    TaskArithmetic,
    Ties,
}

/// `anneal` flags.
#[derive(Debug, Args)]
pub struct AnnealArgs {
    /// The checkpoint every specialist starts from (run or step directory, or HF directory).
    #[arg(long, value_name = "CKPT")]
    pub init: PathBuf,
    /// Token shards (made with the checkpoint's tokenizer).
    #[arg(long)]
    pub shards: PathBuf,
    /// A specialist as NAME=MIX (a mixture TOML, natural or uniform); repeatable. Default: one
    /// per domain, the --mix mixture tilted toward it.
    #[arg(long = "specialist", value_name = "NAME=MIX")]
    pub specialists: Vec<String>,
    /// The mixture tilted toward each domain when no --specialist is given: a proposal or
    /// mixture TOML (its epoch caps are kept), natural (default) or uniform.
    #[arg(long)]
    pub mix: Option<PathBuf>,
    /// How far each default specialist's mixture moves toward its domain: w' = (1 − t) w + t e_d.
    #[arg(long, default_value_t = 0.5)]
    pub tilt: f64,
    /// Optimizer steps per specialist.
    #[arg(long, conflicts_with = "tokens", required_unless_present = "tokens")]
    pub steps: Option<u64>,
    /// Training tokens per specialist.
    #[arg(long)]
    pub tokens: Option<u64>,
    /// Peak learning rate, reached at once and decayed to 0 (cosine).
    #[arg(long, default_value_t = 1e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Specialists trained at once (0: one per core); the cores are shared between them.
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Seed of each specialist's data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Validation sequences per domain.
    #[arg(long, default_value_t = 16)]
    pub eval_sequences: usize,
    /// Checkpoint every N steps, so a killed specialist resumes (0: at the end only).
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// auto (CUDA when present), cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Directory: one training run per specialist, anneal.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// Where instruction data comes from (`sft`, `mix loo`).
#[derive(Debug, Clone, Args)]
pub struct InstructArgs {
    /// The checkpoint to fine-tune (a mixforge run or step directory, or a Hugging Face
    /// directory); its tokenizer needs <|im_start|> and <|im_end|>.
    #[arg(long, value_name = "CKPT")]
    pub init: PathBuf,
    /// An instruction domain: DOMAIN=PATH (a JSONL file with `messages` or prompt/response
    /// fields, a Super-NaturalInstructions task file, a directory of them, or a glob);
    /// repeatable.
    #[arg(long, value_name = "DOMAIN=PATH")]
    pub data: Vec<String>,
    /// A TOML file of `[[source]]` tables (domain, paths, and optional prompt/response
    /// templates and system turn), for records the usual field names don't cover.
    #[arg(long)]
    pub sources: Option<PathBuf>,
    /// Fraction of each domain's examples held out for validation and exact match.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
}

/// How an instruction fine-tune trains (`sft`, `mix loo`).
#[derive(Debug, Clone, Args)]
pub struct SftTrainingArgs {
    /// Optimizer steps.
    #[arg(long, conflicts_with = "tokens")]
    pub steps: Option<u64>,
    /// Training tokens (window positions, padding included; rounded up to whole steps).
    #[arg(long)]
    pub tokens: Option<u64>,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Window length; longer examples are cut (and counted).
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Held-out examples per domain scored at each validation.
    #[arg(long, default_value_t = 64)]
    pub eval_examples: usize,
    /// Seed of the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `sft` flags.
#[derive(Debug, Args)]
pub struct SftArgs {
    #[command(flatten)]
    pub data: InstructArgs,
    #[command(flatten)]
    pub training: SftTrainingArgs,
    /// Domain weights: a TOML file with a `[weights]` table (e.g. `mix loo`'s loo.toml), or
    /// `natural` (token proportions, the default) or `uniform`.
    #[arg(long)]
    pub mix: Option<PathBuf>,
    /// Run directory: metrics.jsonl, checkpoints/, summary.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out from its latest checkpoint (the same data and settings).
    #[arg(long)]
    pub resume: bool,
    /// Validate every N steps (0 = at the end only).
    #[arg(long, default_value_t = 0)]
    pub eval_every: u64,
    /// Checkpoint every N steps (0 = at the end only).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Task file scored after training (repeatable; lm-eval style, without the chat template).
    #[arg(long)]
    pub eval: Vec<PathBuf>,
    /// Items per task.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// auto (CUDA when present), cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// `mix loo` flags.
#[derive(Debug, Args)]
pub struct MixLooArgs {
    #[command(flatten)]
    pub data: InstructArgs,
    #[command(flatten)]
    pub training: SftTrainingArgs,
    /// The weights the runs start from and the rule moves: a mixture TOML, `natural` (the
    /// default) or `uniform`.
    #[arg(long)]
    pub mix: Option<PathBuf>,
    /// Task file scored after each run (repeatable); adds `<task>_acc` metrics.
    #[arg(long)]
    pub eval: Vec<PathBuf>,
    /// Items per task.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// The rule's step size η in w′ ∝ w · exp(η · score).
    #[arg(long, default_value_t = 0.5)]
    pub eta: f64,
    /// No domain's new weight exceeds this.
    #[arg(long, default_value_t = 0.6)]
    pub max_weight: f64,
    /// Runs trained at once, each on one thread (0 = one per core, or per --threads).
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
    /// Directory: plan, runs table, runs/<index>/, deltas.csv, loo.toml, loo.json; reused to resume.
    #[arg(long)]
    pub out: PathBuf,
}
