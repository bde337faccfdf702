//! The int4 export: packed 4-bit codes and fp16 scales in safetensors, run with libtorch's CPU
//! int4 kernels.
//!
//! Layout, version 1 (a directory):
//! - `int4.json`: `{"format": "mixforge-int4", "version": 1, "scheme", "group_size", "model"}`,
//!   `model` being the mixforge model config.
//! - `model.safetensors`: for each quantized matrix `W` `[out, in]`, `W.qweight` (U8
//!   `[out, in/2]`: code + 8, input 2j in the low nibble, 2j+1 in the high one) and `W.scales`
//!   (F16 `[out, in/group_size]`); the value of input i is `(nibble − 8) · scale[i / group_size]`.
//!   Every other tensor (norms; unquantized matrices) in F32 under its HF name.
//! - `tokenizer.json`.
//!
//! The cpu scheme runs `_dyn_quant_matmul_4bit` (int8 dynamic per-token activations, the same
//! quantization the fake-quantized model applies); the accel scheme `_weight_int4pack_mm_for_cpu`
//! (weight-only, its per-channel scale repeated over groups of 32).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::model::{Llama, Weight, param_specs};
use crate::params::Params;
use crate::quant::{GROUP, Int4, Scheme};
use crate::{Error, Result, checkpoint};

pub const FORMAT: &str = "mixforge-int4";
pub const VERSION: u32 = 1;
pub const META: &str = "int4.json";

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: String,
    version: u32,
    scheme: Scheme,
    /// Inputs per scale; absent for one scale per output channel.
    group_size: Option<usize>,
    model: ModelConfig,
}

/// The activations' precision in the int4 kernels.
///
/// On x86 libtorch's int4 CPU kernels are fast only with bf16 activations (the fp32 and
/// `_dyn_quant_matmul_4bit` paths are reference loops, ~50× slower than an fp32 matmul), so
/// `Bf16` is what `eval`, `generate` and `model speed` run: the accel scheme as W4A16, its 16-bit
/// activations; the cpu scheme with its int8 per-token activations fed to the kernel as exact
/// integers in bf16 and the per-token scale applied after. Its scales are rounded to bf16 there.
/// `Exact` computes in fp32 with the fp16 scales: the weight-only kernel then gives the
/// fake-quantized model's logits bit for bit, and the cpu scheme runs `_dyn_quant_matmul_4bit`
/// (the fast path on Arm with KleidiAI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Bf16,
    Exact,
}

/// One packed matrix and the kernel that multiplies by it.
pub struct Packed {
    /// `[out, in/2]` u8 as stored.
    nibbles: Tensor,
    /// `[out, in/group]` fp32 (fp16 values).
    scales: Tensor,
    group: usize,
    kernel: Kernel,
}

enum Kernel {
    /// `_dyn_quant_matmul_4bit`'s packed buffer.
    DynamicActivations(Tensor),
    /// `_weight_int4pack_mm_for_cpu`'s packed weight and `[in/32, out, 2]` scales and zeros (in
    /// the activations' kind); `int8_activations` quantizes the input per token first.
    WeightOnly { packed: Tensor, scales_zeros: Tensor, kind: Kind, int8_activations: bool },
}

impl Kernel {
    fn shallow_clone(&self) -> Kernel {
        match self {
            Kernel::DynamicActivations(t) => Kernel::DynamicActivations(t.shallow_clone()),
            Kernel::WeightOnly { packed, scales_zeros, kind, int8_activations } => Kernel::WeightOnly {
                packed: packed.shallow_clone(),
                scales_zeros: scales_zeros.shallow_clone(),
                kind: *kind,
                int8_activations: *int8_activations,
            },
        }
    }
}

fn pack_nibbles(codes: &Tensor) -> Tensor {
    let (out, inp) = codes.size2().expect("[out, in]");
    let u = (codes.to_kind(Kind::Int16) + 8).to_kind(Kind::Uint8).view([out, inp / 2, 2]);
    u.select(2, 0).bitwise_or_tensor(&u.select(2, 1).bitwise_left_shift_tensor_scalar(4))
}

fn unpack_nibbles(nibbles: &Tensor) -> Tensor {
    let (out, half) = nibbles.size2().expect("[out, in/2]");
    let low = nibbles.bitwise_and(15);
    let high = nibbles.bitwise_right_shift_tensor_scalar(4);
    (Tensor::stack(&[low, high], 2).view([out, half * 2]).to_kind(Kind::Int16) - 8).to_kind(Kind::Int8)
}

impl Packed {
    fn new(nibbles: Tensor, scales: Tensor, group: usize, scheme: Scheme, precision: Precision) -> Result<Packed> {
        let (out, half) = nibbles.size2().expect("[out, in/2]");
        let inp = half * 2;
        if scheme == Scheme::Cpu && precision == Precision::Exact {
            let packed = Tensor::f_internal_dyn_quant_pack_4bit_weight(
                &nibbles,
                &scales,
                None::<Tensor>,
                group as i64,
                inp,
                out,
            )?;
            return Ok(Packed { nibbles, scales, group, kernel: Kernel::DynamicActivations(packed) });
        }
        if !(inp as usize).is_multiple_of(GROUP) {
            return Err(Error::Config(format!("libtorch's int4 kernel needs inputs in groups of {GROUP}, not {inp}")));
        }
        // Scales per group of 32 (a per-channel scale repeated), zero points 0. The kernel takes
        // outputs in multiples of 16: extra rows are zeros, cut from the result.
        let kind = if precision == Precision::Exact { Kind::Float } else { Kind::BFloat16 };
        let padded = (out as usize).next_multiple_of(16) as i64;
        let per_group = scales.repeat_interleave_self_int((GROUP.max(group) / GROUP) as i64, 1, None);
        let per_group = per_group.constant_pad_nd([0, 0, 0, padded - out]);
        let zeros = Tensor::zeros([inp / GROUP as i64, padded], (Kind::Float, scales.device()));
        let scales_zeros = Tensor::stack(&[per_group.tr(), zeros], -1).contiguous().to_kind(kind);
        let codes = (unpack_nibbles(&nibbles).to_kind(Kind::Int) + 8).constant_pad_nd([0, 0, 0, padded - out]);
        let packed = codes.f_internal_convert_weight_to_int4pack_for_cpu(1)?;
        let kernel = Kernel::WeightOnly { packed, scales_zeros, kind, int8_activations: scheme == Scheme::Cpu };
        Ok(Packed { nibbles, scales, group, kernel })
    }

    fn shallow_clone(&self) -> Packed {
        Packed {
            nibbles: self.nibbles.shallow_clone(),
            scales: self.scales.shallow_clone(),
            group: self.group,
            kernel: self.kernel.shallow_clone(),
        }
    }

    fn out_in(&self) -> (i64, i64) {
        let (out, half) = self.nibbles.size2().expect("[out, in/2]");
        (out, half * 2)
    }

    /// `x · Wᵀ` by the int4 kernel.
    pub fn matmul(&self, x: &Tensor) -> Tensor {
        let (out, inp) = self.out_in();
        let mut shape = x.size();
        let x2 = x.to_kind(Kind::Float).reshape([-1, inp]).contiguous();
        let y = match &self.kernel {
            Kernel::DynamicActivations(packed) => {
                Tensor::internal_dyn_quant_matmul_4bit(&x2, packed, self.group as i64, inp, out)
            }
            Kernel::WeightOnly { packed, scales_zeros, kind, int8_activations: false } => x2
                .to_kind(*kind)
                .internal_weight_int4pack_mm_for_cpu(packed, GROUP as i64, scales_zeros)
                .narrow(1, 0, out)
                .to_kind(Kind::Float),
            Kernel::WeightOnly { packed, scales_zeros, kind, int8_activations: true } => {
                // q − zero is an integer in [−255, 255]: exact in bf16.
                let (scale, zero) = crate::quant::token_qparams(&x2);
                let q = ((&x2 * scale.reciprocal()).round() + &zero).clamp(-128, 127) - zero;
                let y = q.to_kind(*kind).internal_weight_int4pack_mm_for_cpu(packed, GROUP as i64, scales_zeros);
                y.narrow(1, 0, out).to_kind(Kind::Float) * scale
            }
        };
        *shape.last_mut().expect("non-scalar") = out;
        y.view(shape.as_slice())
    }

    /// Dequantized rows (an embedding lookup).
    pub fn rows(&self, tokens: &Tensor) -> Tensor {
        let (_, inp) = self.out_in();
        let flat = tokens.flatten(0, -1);
        let codes = unpack_nibbles(&self.nibbles.index_select(0, &flat));
        let int4 = Int4 { codes, scales: self.scales.index_select(0, &flat), group: self.group };
        let mut shape = tokens.size();
        shape.push(inp);
        int4.dequantize().view(shape.as_slice())
    }

    pub fn int4(&self) -> Int4 {
        Int4 { codes: unpack_nibbles(&self.nibbles), scales: self.scales.shallow_clone(), group: self.group }
    }

    pub fn dequantize(&self) -> Tensor {
        self.int4().dequantize()
    }
}

/// Writes `model`'s int4 export into `out` (replacing an earlier export there).
pub fn export(model: &Llama, tokenizer: &Path, out: &Path) -> Result<()> {
    let quant = model.config.quant.as_ref().ok_or_else(|| {
        Error::Config("the model is not quantized: run `mixforge quantize` (PTQ) or `train --qat` first".into())
    })?;
    let int4 = model.int4_weights()?;
    let quantized: std::collections::BTreeSet<&str> = int4.iter().map(|(n, _)| n.as_str()).collect();
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (name, q) in &int4 {
        named.push((format!("{name}.qweight"), pack_nibbles(&q.codes.to_device(Device::Cpu))));
        named.push((format!("{name}.scales"), q.scales.to_device(Device::Cpu).to_kind(Kind::Half)));
    }
    for (name, t) in model.params.named() {
        if !quantized.contains(name.as_str()) && !name.ends_with("_fake_quantizer.log_scale") {
            named.push((name.clone(), t.detach().to_device(Device::Cpu)));
        }
    }
    let meta = Meta {
        format: FORMAT.into(),
        version: VERSION,
        scheme: quant.scheme,
        group_size: (quant.scheme == Scheme::Cpu).then_some(GROUP),
        model: model.config.clone(),
    };
    let building = corpus::atomic::AtomicDir::create(out)?;
    let tmp = building.path();
    Tensor::write_safetensors(&named, tmp.join("model.safetensors"))?;
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Data(format!("serializing {META}: {e}")))?;
    std::fs::write(tmp.join(META), bytes).map_err(|e| Error::io(tmp, e))?;
    std::fs::copy(tokenizer, tmp.join("tokenizer.json")).map_err(|e| Error::io(tokenizer, e))?;
    building.commit()?;
    Ok(())
}

/// Loads an int4 export to run on the CPU with the int4 kernels.
pub fn load(dir: &Path, precision: Precision) -> Result<Llama> {
    let meta_path = dir.join(META);
    let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| Error::format(&meta_path, e.to_string()))?;
    if meta.format != FORMAT || meta.version != VERSION {
        return Err(Error::format(
            &meta_path,
            format!("format {} version {} is not {FORMAT} version {VERSION}", meta.format, meta.version),
        ));
    }
    let config = meta.model;
    config.validate()?;
    let quant =
        config.quant.clone().ok_or_else(|| Error::format(&meta_path, "the model config has no quant section"))?;
    let weights = dir.join("model.safetensors");
    let tensors: BTreeMap<String, Tensor> = checkpoint::read_tensors(&weights)?;
    let source = weights.display().to_string();
    let specs: Vec<_> = param_specs(&config)
        .into_iter()
        .filter(|s| !quant.quantizes(&s.name) && !s.name.ends_with("_fake_quantizer.log_scale"))
        .collect();
    let params = Params::new(&specs, Device::Cpu, 0, false);
    params.load(&tensors, &source)?;
    let mut packed: BTreeMap<String, Packed> = BTreeMap::new();
    for spec in param_specs(&config).iter().filter(|s| quant.quantizes(&s.name)) {
        let get = |suffix: &str| {
            tensors
                .get(&format!("{}.{suffix}", spec.name))
                .ok_or_else(|| Error::Data(format!("{source}: tensor {}.{suffix} is missing", spec.name)))
        };
        let (nibbles, scales) = (get("qweight")?, get("scales")?);
        let (out, inp) = (spec.shape[0], spec.shape[1]);
        let groups = meta.group_size.map_or(1, |g| inp / g as i64);
        if nibbles.size() != [out, inp / 2] || scales.size() != [out, groups] {
            return Err(Error::Data(format!(
                "{source}: {} has codes {:?} and scales {:?}, the model needs [{out}, {}] and [{out}, {groups}]",
                spec.name,
                nibbles.size(),
                scales.size(),
                inp / 2
            )));
        }
        let p = Packed::new(
            nibbles.to_kind(Kind::Uint8),
            scales.to_kind(Kind::Float),
            (inp / groups) as usize,
            meta.scheme,
            precision,
        )?;
        packed.insert(spec.name.clone(), p);
    }
    let weight = |params: &Params, name: &str| match packed.get(name) {
        Some(p) => Weight::Int4(p.shallow_clone()),
        None => Weight::Dense { w: params.get(name), quantized: false, log_scale: None },
    };
    Ok(Llama::assemble(config, params, weight, Device::Cpu))
}

/// The bytes a directory's files take on disk.
pub fn size_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
        })
        .unwrap_or(0)
}
