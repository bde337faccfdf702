//! Progress bars on stderr (hidden when stderr is not a terminal).

use std::sync::Mutex;

use corpus::pipeline::{Progress, Unit};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws one indicatif bar per stage.
#[derive(Default)]
pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    /// Bars on stderr; indicatif hides them off a terminal.
    pub fn new() -> Bars {
        Bars { bar: Mutex::new(None) }
    }
}

impl Progress for Bars {
    fn begin(&self, stage: &str, total: u64, unit: Unit) {
        let template = match unit {
            Unit::Bytes => {
                "{prefix:>18} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}"
            }
            Unit::Docs => "{prefix:>18} [{bar:30}] {pos}/{len} docs {per_sec} eta {eta}",
        };
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "))
            .with_prefix(stage.to_string());
        *self.bar.lock().expect("not poisoned") = Some(bar);
    }

    fn set(&self, done: u64) {
        if let Some(bar) = self.bar.lock().expect("not poisoned").as_ref() {
            bar.set_position(done);
        }
    }

    fn end(&self) {
        if let Some(bar) = self.bar.lock().expect("not poisoned").take() {
            bar.finish_and_clear();
        }
    }
}

/// A bar of `total` items named `unit` on stderr, e.g. `fine-tunes [====   ] 3/6 runs`.
pub fn bar(total: u64, prefix: &str, unit: &str) -> ProgressBar {
    let template = format!("{{prefix:>18}} [{{bar:30}}] {{pos}}/{{len}} {unit} eta {{eta}} {{msg}}");
    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        .with_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "))
        .with_prefix(prefix.to_string())
}
