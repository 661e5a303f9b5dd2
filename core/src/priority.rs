//! Request criticality, for load shedding.

use std::fmt;

/// How much a request matters when the system must drop some (Google SRE's criticality).
///
/// Ordered: `Sheddable < Default < Critical`, so "shed everything below X" is a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Priority {
    /// Background work, prefetches, batch jobs that can run later: shed first.
    Sheddable,
    /// Ordinary traffic.
    #[default]
    Default,
    /// Traffic that must survive an overload (checkout, health of the pipeline itself).
    Critical,
}

impl Priority {
    /// The lower-case name used in messages and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Sheddable => "sheddable",
            Priority::Default => "default",
            Priority::Critical => "critical",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
