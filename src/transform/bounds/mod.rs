//! Which programs are safe to run inside the dispatcher: a static bound on what a run can cost.
//!
//! jaq has no step budget and no recursion limit, so a program that loops cannot be stopped and
//! one that recurses deeply aborts its process: programs run in worker processes (`pool.rs`).
//! Most integration templates are straight-line code (paths, object and string construction,
//! `if`, `select`, comparisons), whose cost is bounded by their own size and the payload's. This
//! module proves such a bound, in the spirit of a verifier: it walks the parsed program, refuses
//! anything that can loop or iterate (recursion, `reduce`, `.[]`, `..`, `label`, any builtin
//! not on a short list), and for the rest bounds the number of outputs, the size of every value
//! and the total work as `per_byte × payload bytes + fixed`. Pure: no I/O.
//!
//! The bounds are deliberately loose (sizes count a value as its JSON text with every escape
//! expanded); what matters is that they are upper bounds. A program this module refuses is not
//! wrong: it runs in a worker, as every program did before.
mod builtins;
mod scope;
#[cfg(test)]
mod tests;
mod walk;

use scope::Scope;
use walk::{Walk, TEXT_GROWTH};

/// `per_byte × payload bytes + fixed`, in bytes of value or units of work.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Linear {
    pub per_byte: f64,
    pub fixed: f64,
}

impl Linear {
    pub(super) const ZERO: Linear = Linear::fixed(0.0);
    pub(super) const INPUT: Linear = Linear {
        per_byte: 1.0,
        fixed: 0.0,
    };

    pub(super) const fn fixed(fixed: f64) -> Linear {
        Linear {
            per_byte: 0.0,
            fixed,
        }
    }

    /// The bound for a payload of `bytes`.
    pub fn at(self, bytes: usize) -> f64 {
        self.per_byte * bytes as f64 + self.fixed
    }

    pub(super) fn plus(self, other: Linear) -> Linear {
        Linear {
            per_byte: self.per_byte + other.per_byte,
            fixed: self.fixed + other.fixed,
        }
    }

    pub(super) fn max(self, other: Linear) -> Linear {
        Linear {
            per_byte: self.per_byte.max(other.per_byte),
            fixed: self.fixed.max(other.fixed),
        }
    }

    pub(super) fn times(self, factor: f64) -> Linear {
        Linear {
            per_byte: self.per_byte * factor,
            fixed: self.fixed * factor,
        }
    }
}

/// What one run of a program can cost on a payload of N bytes, at most.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    /// Values the program outputs.
    pub outputs: f64,
    /// The size of the largest value it builds, an output or not.
    pub peak: Linear,
    /// Work: bytes built, copied, compared or converted, summed over the run.
    pub work: Linear,
}

/// Why a program has no bound here (it then runs in a worker process).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unbounded(pub String);

/// The bound of `code`, or why there is none. Recursion on the program's nesting: call it on a
/// thread with a large stack (a program of [`super::MAX_PROGRAM_BYTES`] may nest deeply).
pub fn cost(code: &str) -> Result<Cost, Unbounded> {
    let term = jaq_core::load::parse(code, |p| p.term())
        .ok_or_else(|| Unbounded("the program does not parse as one term".into()))?;
    let mut walk = Walk::default();
    let bound = walk.term(&term, Scope::Root, Linear::INPUT)?;
    // Reading the payload, and an uncaught error's message, which may quote any value built.
    let work = bound
        .work
        .plus(Linear::INPUT)
        .plus(bound.peak.max(Linear::INPUT).times(TEXT_GROWTH));
    Ok(Cost {
        outputs: bound.count,
        peak: bound.peak.max(Linear::INPUT),
        work,
    })
}

/// The most work a run in the dispatcher may cost (about a millisecond or two of CPU); a
/// larger payload for the same program goes to a worker.
pub const IN_PROCESS_WORK: f64 = (4 << 20) as f64;
/// The largest value a run in the dispatcher may build, in bytes of JSON text.
pub const IN_PROCESS_PEAK: f64 = (1 << 20) as f64;

/// The deepest payload a run in the dispatcher may read: reading, comparing and writing values
/// recurse on their nesting. (Payloads are rendered from data parsed with serde_json's limit of
/// 128, so this only guards against a path that skipped it.)
pub const IN_PROCESS_NESTING: usize = 160;

impl Cost {
    /// Whether a run on `payload` is cheap enough to run in the dispatcher.
    pub fn fits_in_process(&self, payload: &[u8]) -> bool {
        let bytes = payload.len();
        self.work.at(bytes) <= IN_PROCESS_WORK
            && self.peak.at(bytes) <= IN_PROCESS_PEAK
            && nesting_within(payload, IN_PROCESS_NESTING)
    }
}

/// Whether the JSON text `json` nests arrays and objects at most `limit` deep (brackets inside
/// strings do not count).
pub fn nesting_within(json: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}
