//! `tailgate run`: the pipeline, until SIGTERM or Ctrl-C; and `tailgate
//! route`, the stage that keys unkeyed input before it.

use super::{Failure, PolicyArgs};
use crate::config::{Settings, Sources};

/// `tailgate run`'s arguments.
#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Kafka bootstrap servers (overrides kafka.brokers).
    #[arg(long)]
    pub brokers: Option<String>,
}

/// `tailgate route`'s arguments.
#[derive(clap::Args)]
pub struct RouteArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Kafka bootstrap servers (overrides kafka.brokers).
    #[arg(long)]
    pub brokers: Option<String>,
    /// The unkeyed topic to read (overrides route.from_topic).
    #[arg(long)]
    pub from: Option<String>,
}

pub(super) fn run(
    runtime: &tokio::runtime::Runtime,
    policy: &PolicyArgs,
    brokers: Option<String>,
) -> Result<(), Failure> {
    let mut sources = Sources::for_env(&policy.policies, &policy.env, policy.config.as_deref());
    if let Some(b) = brokers {
        sources.overrides.push(("kafka.brokers".into(), b));
    }
    let loaded = Settings::load(&sources).map_err(Failure::usage)?;
    runtime
        .block_on(crate::app::run(
            loaded,
            shutdown_signal(),
            Default::default(),
        ))
        .map_err(|e| Failure::failed(format!("{e:#}")))
}

pub(super) fn route(
    runtime: &tokio::runtime::Runtime,
    policy: &PolicyArgs,
    brokers: Option<String>,
    from: Option<String>,
) -> Result<(), Failure> {
    let mut sources = Sources::for_env(&policy.policies, &policy.env, policy.config.as_deref());
    if let Some(b) = brokers {
        sources.overrides.push(("kafka.brokers".into(), b));
    }
    if let Some(f) = from {
        sources.overrides.push(("route.from_topic".into(), f));
    }
    let loaded = Settings::load(&sources).map_err(Failure::usage)?;
    if loaded.settings.route.from_topic.is_none() {
        return Err(Failure::usage(
            "route.from_topic is not set: name the unkeyed topic the Collector writes to (settings, or --from)",
        ));
    }
    runtime
        .block_on(crate::app::route::route(
            loaded,
            shutdown_signal(),
            Default::default(),
        ))
        .map_err(|e| Failure::failed(format!("{e:#}")))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}
