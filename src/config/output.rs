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
    /// Also write each kept span's adjusted count (`tailgate.adjusted_count`),
    /// rounded to an integer, under this attribute name: what a backend
    /// reads as the sample rate (Honeycomb: `SampleRate`). Off when unset.
    pub sample_rate_attribute: Option<String>,
}

impl Default for OutputSettings {
    fn default() -> Self {
        Self {
            critical_path: true,
            sample_rate_attribute: None,
        }
    }
}

impl OutputSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.sample_rate_attribute {
            if name.trim().is_empty() {
                return Err("output.sample_rate_attribute: give an attribute name \
                     (Honeycomb reads `SampleRate`), or leave it out"
                    .into());
            }
            if name.starts_with("tailgate.") {
                return Err(format!(
                    "output.sample_rate_attribute: `{name}` is tailgate's own namespace; \
                     the adjusted count is already written as `tailgate.adjusted_count`"
                ));
            }
        }
        Ok(())
    }
}
