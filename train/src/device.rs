//! The compute device and what `mixforge doctor` reports about libtorch.

use tch::Device;

/// CUDA device 0 when present, the CPU otherwise; `"cpu"` / `"cuda"` / `"cuda:N"` force one.
pub fn pick(name: Option<&str>) -> crate::Result<Device> {
    match name {
        None | Some("auto") => Ok(Device::cuda_if_available()),
        Some("cpu") => Ok(Device::Cpu),
        Some(s) if s.starts_with("cuda") => {
            if !tch::Cuda::is_available() {
                return Err(crate::Error::Config(format!("--device {s}: CUDA is not available to this libtorch")));
            }
            let index = s
                .strip_prefix("cuda:")
                .map(str::parse::<usize>)
                .transpose()
                .map_err(|_| crate::Error::Config(format!("--device {s}: expected cuda or cuda:N")))?;
            Ok(Device::Cuda(index.unwrap_or(0)))
        }
        Some(s) => Err(crate::Error::Config(format!("--device {s}: expected auto, cpu, cuda or cuda:N"))),
    }
}

/// The device to run `checkpoint` on: an int4 export runs on the CPU (libtorch's int4 kernels
/// are CPU kernels), whatever `name` asks for; anything else as [`pick`] chooses.
pub fn for_checkpoint(checkpoint: &std::path::Path, name: Option<&str>) -> crate::Result<Device> {
    if checkpoint.join(crate::int4::META).exists() {
        let device = pick(name)?;
        if device != Device::Cpu && name.is_some_and(|n| n != "auto") {
            eprintln!("note: {} is an int4 export: it runs on the CPU", checkpoint.display());
        }
        return Ok(Device::Cpu);
    }
    pick(name)
}

/// Facts about the linked libtorch, one per line.
pub fn report() -> Vec<(String, String)> {
    let lib = env!("MIXFORGE_LIBTORCH_LIB");
    let mut lines = vec![
        ("libtorch".to_string(), format!("{} ({lib})", libtorch_version(lib))),
        ("intra-op threads".to_string(), tch::get_num_threads().to_string()),
        ("CUDA available".to_string(), tch::Cuda::is_available().to_string()),
        ("CUDA devices".to_string(), tch::Cuda::device_count().to_string()),
        ("cuDNN".to_string(), tch::Cuda::cudnn_is_available().to_string()),
        (
            "CUDA runtime".to_string(),
            if tch::Cuda::is_available() { tch::utils::version_cudart().to_string() } else { "-".into() },
        ),
        ("MKL-DNN".to_string(), tch::utils::has_mkldnn().to_string()),
        ("default device".to_string(), format!("{:?}", Device::cuda_if_available())),
    ];
    if let Ok(exe) = std::env::current_exe() {
        lines.push(("binary".to_string(), exe.display().to_string()));
    }
    lines
}

/// The version of the PyTorch installation a libtorch folder belongs to (`torch/version.py`).
fn libtorch_version(lib: &str) -> String {
    let path = std::path::Path::new(lib).join("../version.py");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("__version__ = ").map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}
