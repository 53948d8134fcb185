//! `tailgate explain`: which rule decides each trace of an OTLP file, and why.

use std::path::PathBuf;
use std::sync::Arc;

use super::{load, Failure, PolicyArgs};

/// `tailgate explain`'s arguments.
#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Only this trace (32 hex characters).
    #[arg(long)]
    pub trace: Option<String>,
    /// OTLP files: JSON (one object, or one per line) or protobuf `TracesData`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub(super) fn explain(
    policy: &PolicyArgs,
    trace: Option<&str>,
    files: &[PathBuf],
) -> Result<(), Failure> {
    let loaded = load(policy)?;
    let wanted = match trace.map(|t| crate::otlp::TraceId::from_hex(t.trim())) {
        Some(None) => return Err(Failure::usage("--trace wants 32 hex characters")),
        Some(id) => id,
        None => None,
    };
    let mut capture = crate::replay::Capture::default();
    for f in files {
        capture
            .add_file(f)
            .map_err(|e| Failure::usage(format!("{e:#}")))?;
    }
    // What a running tailgate decides of each trace (its rules loaded
    // afresh: the samplers' state is the replay's own).
    let decided = crate::replay::decisions(
        Arc::new(load(policy)?.rules),
        super::replay::replay_config(&loaded.settings),
        capture.clone(),
    );
    let (traces, rejected) = capture.into_traces();
    for (reason, n) in &rejected {
        eprintln!("warning: {n} messages or spans rejected: {reason}");
    }
    let mut shown = 0;
    for (id, spans, _) in traces {
        if wanted.is_some_and(|w| w != id) {
            continue;
        }
        if shown > 0 {
            println!();
        }
        print!("{}", crate::replay::explain(&loaded.rules, id, &spans));
        print!(
            "{}",
            crate::replay::as_decided(decided.get(&id).map_or(&[], Vec::as_slice))
        );
        shown += 1;
    }
    if shown == 0 {
        return Err(Failure::failed(format!(
            "no trace found{}",
            if trace.is_some() { " with that id" } else { "" }
        )));
    }
    Ok(())
}
