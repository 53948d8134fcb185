//! The `output` section: what tailgate writes onto the kept traces.

use serde::{Deserialize, Serialize};

/// What kept traces carry besides their own spans' fields.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutputSettings {
    /// Write the trace's critical-path summary onto its root span (its
    /// top-most span when the root never arrived), and each path span's
    /// time on the path onto that span (see docs/output.md).
    pub critical_path: bool,
}

impl Default for OutputSettings {
    fn default() -> Self {
        Self {
            critical_path: true,
        }
    }
}
