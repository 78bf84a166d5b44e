//! Verdicts (`valid`, `invalid`, `unknown`), how they combine, and their exit codes.

use serde::Serialize;
use std::fmt;

/// What a checker concluded. Combined, the worst wins: `invalid` beats `unknown` beats `valid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The property holds.
    Valid,
    /// A budget ran out, or the history holds too little to decide. Never reported as valid.
    Unknown,
    /// The property is violated; a witness says how.
    Invalid,
}

impl Verdict {
    /// The worse of two verdicts.
    pub fn combine(self, other: Verdict) -> Verdict {
        self.max(other)
    }

    /// The exit code of `helios check`: 0 valid, 1 invalid, 2 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unknown => 2,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Unknown => "unknown",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_verdict_wins() {
        assert_eq!(Verdict::Valid.combine(Verdict::Unknown), Verdict::Unknown);
        assert_eq!(Verdict::Unknown.combine(Verdict::Invalid), Verdict::Invalid);
        assert_eq!(Verdict::Invalid.combine(Verdict::Valid), Verdict::Invalid);
        assert_eq!(Verdict::Valid.combine(Verdict::Valid), Verdict::Valid);
    }
}
