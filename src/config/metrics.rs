//! The `metrics` section: where `/metrics`, `/healthz` and `/readyz` listen.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The HTTP endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Address for `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9464)),
        }
    }
}
