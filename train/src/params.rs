//! Named parameters living in flat buffers.
//!
//! Every parameter is a view into one of two contiguous buffers (with and without weight
//! decay), so the optimizer updates a whole group with a handful of kernels instead of a
//! loop over tensors, and checkpoints hold exactly the bytes training used.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// How a parameter starts.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Normal { std: f64 },
    Ones,
    Zeros,
}

/// A parameter to create.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<i64>,
    pub init: Init,
    /// Matrices decay; norm gains don't.
    pub decay: bool,
}

/// One flat buffer and the parameters that are views into it.
pub struct Group {
    pub flat: Tensor,
    /// Indices into [`Params::named`].
    pub members: Vec<usize>,
    pub decay: bool,
}

/// The parameters of one model.
pub struct Params {
    named: Vec<(String, Tensor)>,
    by_name: BTreeMap<String, usize>,
    pub groups: Vec<Group>,
}

impl Params {
    /// Allocates and initialises every parameter, in order, from `seed`.
    pub fn new(specs: &[ParamSpec], device: Device, seed: u64, trainable: bool) -> Params {
        // libtorch's generator is process-wide: hold it while seeding and drawing, so models
        // built concurrently (proxies, tests) still get exactly their seed's weights.
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = INIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tch::manual_seed(seed as i64);
        let mut named: Vec<(String, Tensor)> = Vec::with_capacity(specs.len());
        let mut groups = Vec::new();
        for decay in [true, false] {
            let members: Vec<usize> = (0..specs.len()).filter(|&i| specs[i].decay == decay).collect();
            let numel: i64 = members.iter().map(|&i| specs[i].shape.iter().product::<i64>()).sum();
            let flat = Tensor::zeros([numel], (Kind::Float, device));
            groups.push((flat, members, decay));
        }
        let mut slots: Vec<Option<Tensor>> = (0..specs.len()).map(|_| None).collect();
        for (flat, members, _) in &groups {
            let mut offset = 0;
            for &i in members {
                let n: i64 = specs[i].shape.iter().product();
                slots[i] = Some(flat.narrow(0, offset, n).view(specs[i].shape.as_slice()));
                offset += n;
            }
        }
        // Initialise in declaration order so the values depend only on the specs and the seed.
        tch::no_grad(|| {
            for (spec, slot) in specs.iter().zip(&mut slots) {
                let t = slot.as_mut().expect("every spec has a slot");
                match spec.init {
                    Init::Normal { std } => {
                        let _ = t.normal_(0.0, std);
                    }
                    Init::Ones => {
                        let _ = t.fill_(1.0);
                    }
                    Init::Zeros => {
                        let _ = t.fill_(0.0);
                    }
                }
            }
        });
        for (spec, slot) in specs.iter().zip(slots) {
            let t = slot.expect("every spec has a slot").set_requires_grad(trainable);
            named.push((spec.name.clone(), t));
        }
        let by_name = named.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect();
        let groups = groups.into_iter().map(|(flat, members, decay)| Group { flat, members, decay }).collect();
        Params { named, by_name, groups }
    }

    pub fn get(&self, name: &str) -> Tensor {
        self.named[self.by_name[name]].1.shallow_clone()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The parameters in declaration order.
    pub fn named(&self) -> &[(String, Tensor)] {
        &self.named
    }

    /// Overwrites parameters from named tensors (converted to fp32), requiring every
    /// parameter to be present with its exact shape; `source` names the origin in errors.
    pub fn load(&self, tensors: &BTreeMap<String, Tensor>, source: &str) -> Result<()> {
        for (name, param) in &self.named {
            let t = tensors.get(name).ok_or_else(|| Error::Data(format!("{source}: tensor {name} is missing")))?;
            if t.size() != param.size() {
                return Err(Error::Data(format!(
                    "{source}: tensor {name} has shape {:?}, the model needs {:?}",
                    t.size(),
                    param.size()
                )));
            }
            tch::no_grad(|| param.shallow_clone().copy_(&t.to_kind(Kind::Float)));
        }
        Ok(())
    }

    /// Each group's gradient as one flat tensor (zeros where a parameter got none).
    pub fn flat_grads(&self) -> Vec<Tensor> {
        self.groups
            .iter()
            .map(|g| {
                let parts: Vec<Tensor> = g
                    .members
                    .iter()
                    .map(|&i| {
                        let p = &self.named[i].1;
                        let grad = p.grad();
                        if grad.defined() { grad.view(-1) } else { p.zeros_like().view(-1) }
                    })
                    .collect();
                if parts.is_empty() { g.flat.zeros_like() } else { Tensor::cat(&parts, 0) }
            })
            .collect()
    }

    /// Forgets the gradients (the next backward allocates fresh ones).
    pub fn zero_grads(&mut self) {
        for (_, p) in &mut self.named {
            p.zero_grad();
        }
    }

    pub fn numel(&self) -> i64 {
        self.groups.iter().map(|g| g.flat.numel() as i64).sum()
    }
}
