//! Hot reload of the rules: when a policy file changes (file watch) or the
//! process gets SIGHUP, the files are read and validated again and, if the
//! rules changed, the new rule set is sent to the partition workers, which
//! switch before their next decision. Buffered traces stay where they are.
//!
//! An invalid file is rejected: the rules in force stay, and
//! `tailgate_rule_reloads_total{result="error"}` and an error log say so.
//! Settings other than the rules (Kafka, buffer, decision timing) are read
//! once at start; a change to them is logged as needing a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Settings, Sources};
use crate::metrics as m;
use crate::rules::RuleSet;

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// New rules are in force.
    Swapped { rules: usize },
    /// The files are valid and the rules are the same.
    Unchanged,
}

/// Reads the files again and swaps the rules in if they are valid and
/// different. `started_with` is what the process started with, to warn about
/// changes that need a restart.
pub fn reload_once(
    sources: &Sources,
    started_with: &Settings,
    rules: &watch::Sender<Arc<RuleSet>>,
) -> Result<Outcome, ConfigError> {
    let loaded = match Settings::load(sources) {
        Ok(l) => l,
        Err(e) => {
            metrics::counter!(m::RULE_RELOADS, "result" => "error").increment(1);
            return Err(e);
        }
    };
    let mut others = loaded.settings.clone();
    others.rules = started_with.rules.clone();
    if others != *started_with {
        tracing::warn!(
            "settings other than the rules changed in {}; they take effect at the next restart",
            sources.describe()
        );
    }
    metrics::counter!(m::RULE_RELOADS, "result" => "ok").increment(1);
    if loaded.rules.specs() == rules.borrow().specs() {
        return Ok(Outcome::Unchanged);
    }
    let n = loaded.rules.names().len() - 1;
    metrics::gauge!(m::RULES_LOADED).set(n as f64);
    rules.send_replace(Arc::new(loaded.rules));
    Ok(Outcome::Swapped { rules: n })
}

/// [`reload_once`] off the runtime's threads, which run the partition
/// workers: reading and compiling the files is blocking work (a slow or
/// stuck file system would hold a runtime thread). `None` if it panicked.
pub async fn reload_off_runtime(
    sources: &Sources,
    started_with: &Settings,
    rules: &watch::Sender<Arc<RuleSet>>,
) -> Option<Result<Outcome, ConfigError>> {
    let (sources, started_with, rules) = (sources.clone(), started_with.clone(), rules.clone());
    tokio::task::spawn_blocking(move || reload_once(&sources, &started_with, &rules))
        .await
        .ok()
}

/// Why a reload was started.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    FileChanged,
    Hangup,
}

/// Watches the policy files and SIGHUP and reloads on either, until `stop`.
pub fn spawn(
    sources: Sources,
    started_with: Settings,
    rules: watch::Sender<Arc<RuleSet>>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Trigger>();
    let watcher = watch_files(&sources.files, tx.clone());
    #[cfg(unix)]
    {
        let (tx, stop) = (tx.clone(), stop.clone());
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; rules reload on file changes only");
                return;
            };
            while stop
                .run_until_cancelled(hup.recv())
                .await
                .flatten()
                .is_some()
            {
                if tx.send(Trigger::Hangup).is_err() {
                    break;
                }
            }
        });
    }
    tokio::spawn(async move {
        // Dropping the watcher stops it; keep it for the task's life.
        let _watcher = watcher;
        while let Some(Some(trigger)) = stop.run_until_cancelled(rx.recv()).await {
            // Editors and Kubernetes write in several steps: wait for quiet.
            tokio::time::sleep(Duration::from_millis(300)).await;
            while rx.try_recv().is_ok() {}
            let Some(outcome) = reload_off_runtime(&sources, &started_with, &rules).await else {
                tracing::error!(?trigger, "rule reload panicked; the rules in force stay");
                continue;
            };
            match outcome {
                Ok(Outcome::Swapped { rules }) => {
                    tracing::info!(
                        ?trigger,
                        rules,
                        "rules reloaded from {}",
                        sources.describe()
                    )
                }
                Ok(Outcome::Unchanged) => {
                    tracing::info!(?trigger, "policy files re-read; the rules are unchanged")
                }
                Err(e) => tracing::error!(
                    ?trigger,
                    "rule reload rejected, the rules in force stay: {e}"
                ),
            }
        }
    })
}

/// Watches the directories holding `files` (editors replace files, and a
/// Kubernetes ConfigMap volume swaps a `..data` symlink) and reports changes
/// that concern them. Without a watcher (an unsupported file system), SIGHUP
/// still reloads.
fn watch_files(
    files: &[PathBuf],
    tx: mpsc::UnboundedSender<Trigger>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let wanted: Vec<std::ffi::OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_os_string()))
        .chain(std::iter::once("..data".into()))
        .collect();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let concerns_us = event.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| wanted.iter().any(|w| w.as_os_str() == n))
        });
        if concerns_us {
            let _ = tx.send(Trigger::FileChanged);
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch the policy files ({e}); reload with SIGHUP");
            return None;
        }
    };
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        if let Err(e) = watcher.watch(&d, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), "cannot watch ({e}); reload with SIGHUP");
        }
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &std::path::Path, rules: &str) {
        std::fs::write(path, format!("rules:\n{rules}")).expect("write policy");
    }

    fn sources(dir: &std::path::Path) -> Sources {
        Sources {
            files: vec![dir.join("test.yaml")],
            environment: false,
            overrides: Vec::new(),
        }
    }

    #[test]
    fn valid_changes_swap_and_invalid_ones_keep_the_rules() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("test.yaml");
        write(&file, "  - { name: all, sample: keep }\n");
        let loaded = Settings::load(&sources(dir.path())).expect("valid");
        let (tx, rx) = watch::channel(Arc::new(loaded.rules));

        assert_eq!(
            reload_once(&sources(dir.path()), &loaded.settings, &tx).expect("valid"),
            Outcome::Unchanged
        );
        write(
            &file,
            "  - { name: errors, when: { trace: { error: true } }, sample: keep }\n  - { name: rest, sample: drop }\n",
        );
        assert_eq!(
            reload_once(&sources(dir.path()), &loaded.settings, &tx).expect("valid"),
            Outcome::Swapped { rules: 2 }
        );
        assert_eq!(&*rx.borrow().names()[0], "errors");

        write(&file, "  - { name: bad, sample: { rate: 7 } }\n");
        let e = reload_once(&sources(dir.path()), &loaded.settings, &tx).expect_err("invalid");
        assert!(e.to_string().contains("sample.rate"), "{e}");
        assert_eq!(&*rx.borrow().names()[0], "errors", "old rules stay");
    }

    #[tokio::test]
    async fn a_changed_file_is_picked_up_by_the_watcher() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("test.yaml");
        write(&file, "  - { name: first, sample: keep }\n");
        let loaded = Settings::load(&sources(dir.path())).expect("valid");
        let (tx, mut rx) = watch::channel(Arc::new(loaded.rules));
        let stop = CancellationToken::new();
        let task = spawn(sources(dir.path()), loaded.settings, tx, stop.clone());
        // Give the watcher a moment to start, then replace the file the way
        // editors do: write a new file and rename it over the old one.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let tmp = dir.path().join(".test.yaml.tmp");
        write(&tmp, "  - { name: second, sample: drop }\n");
        std::fs::rename(&tmp, &file).expect("rename");
        let changed = tokio::time::timeout(Duration::from_secs(10), rx.changed()).await;
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(changed.is_ok(), "no reload within 10 s");
        assert_eq!(&*rx.borrow().names()[0], "second");
    }
}
