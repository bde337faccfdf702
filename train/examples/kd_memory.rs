//! Peak memory of one distillation step (forward and backward, student and teacher) at a real
//! vocabulary: the chunked loss the trainer uses against whole logits. `bench/kd-memory.sh`
//! runs each in its own process and compares their peak resident memory.
//!
//! Usage: kd_memory chunked|whole [VOCAB] [SEQ]

use std::time::Instant;

use tch::{Device, Kind, Tensor};
use train::config::{AttnKind, ModelConfig};
use train::loss::{self, KdConfig};
use train::model::{Inputs, Llama};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    kb / 1024.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("chunked");
    let vocab: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(202_048);
    let seq: i64 = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(4096);
    // A small body with the real vocabulary: the logits dominate memory, as in a 1B model.
    let config = ModelConfig {
        vocab_size: vocab,
        d_model: 64,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 16,
        ffn_dim: 128,
        layer_types: vec![AttnKind::Global],
        sliding_window: 0,
        rope_theta: 500_000.0,
        norm_eps: 1e-5,
        tie_embeddings: true,
        max_seq_len: seq as usize,
        quant: None,
    };
    let student = Llama::new(config.clone(), Device::Cpu, 0, true).unwrap();
    let teacher = Llama::new(config, Device::Cpu, 1, false).unwrap();
    tch::manual_seed(0);
    let all = Tensor::randint(vocab as i64, [1, seq + 1], (Kind::Int64, Device::Cpu));
    let inputs = Inputs::tokens(all.narrow(1, 0, seq));
    let targets = all.narrow(1, 1, seq);
    let kd = KdConfig { temperature: 1.0, ce_weight: 0.0 };
    let baseline = peak_rss_mb();
    let start = Instant::now();
    let value = match mode {
        "whole" => {
            let logits = student.forward(&inputs);
            let t = tch::no_grad(|| teacher.forward(&inputs));
            let l = loss::distillation(&logits, &t, &targets, &kd);
            l.backward();
            l.double_value(&[])
        }
        _ => loss::window_loss(
            &student,
            &inputs,
            &targets,
            Some(loss::Teacher::Online(&teacher, &inputs)),
            &kd,
            loss::DEFAULT_CHUNK,
            1.0,
        ),
    };
    let line = format!(
        "{{\"mode\": \"{mode}\", \"vocab\": {vocab}, \"seq\": {seq}, \"loss\": {value:.6}, \"seconds\": {:.2}, \"peak_rss_mb\": {:.0}, \"model_rss_mb\": {:.0}}}",
        start.elapsed().as_secs_f64(),
        peak_rss_mb(),
        baseline
    );
    std::io::Write::write_all(&mut std::io::stdout(), format!("{line}\n").as_bytes()).expect("stdout");
}
