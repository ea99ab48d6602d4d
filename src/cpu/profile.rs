//! Wall-clock time per CPU op (`lorb bench --backend cpu --profile`), off unless enabled. The ops
//! run their parallel parts inside, so a scope on the calling thread times the whole op.
//! In wasm (no clock in `std`) every scope is a no-op.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Vec<(&'static str, usize, f64)>> = Mutex::new(Vec::new());

/// Starts (or stops) recording; starting clears what was recorded.
pub fn enable(on: bool) {
    if on {
        TABLE.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    ON.store(on, Ordering::Relaxed);
}

/// `(op, calls, seconds)` recorded since [`enable`], slowest first.
pub fn take() -> Vec<(&'static str, usize, f64)> {
    let mut v = std::mem::take(&mut *TABLE.lock().unwrap_or_else(|e| e.into_inner()));
    v.sort_by(|a, b| b.2.total_cmp(&a.2));
    v
}

/// Times until dropped.
pub struct Scope {
    #[cfg(not(target_arch = "wasm32"))]
    start: Option<(&'static str, std::time::Instant)>,
}

pub fn scope(name: &'static str) -> Scope {
    #[cfg(not(target_arch = "wasm32"))]
    return Scope { start: ON.load(Ordering::Relaxed).then(|| (name, std::time::Instant::now())) };
    #[cfg(target_arch = "wasm32")]
    {
        let _ = name;
        Scope {}
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some((name, t)) = self.start.take() {
            let s = t.elapsed().as_secs_f64();
            let mut tab = TABLE.lock().unwrap_or_else(|e| e.into_inner());
            match tab.iter_mut().find(|e| e.0 == name) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += s;
                }
                None => tab.push((name, 1, s)),
            }
        }
    }
}
