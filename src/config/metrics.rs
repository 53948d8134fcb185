//! The `metrics` section: where `/metrics`, `/healthz` and `/readyz` listen,
//! and the latency attribution measured on every trace.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The HTTP endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Address for `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Latency attribution on every decided trace, kept or dropped: the
    /// `tailgate_critical_path_*` and `tailgate_trace_duration_seconds`
    /// metrics.
    pub critical_path: bool,
    /// The most distinct services the attribution metrics name (their
    /// `service` and `root_service` labels, over the whole process); the
    /// rest are counted as `(other)`.
    pub max_services: usize,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9464)),
            critical_path: true,
            max_services: 50,
        }
    }
}
