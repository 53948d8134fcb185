//! `tailgate check`: validates every environment's settings and rules.

use std::path::Path;

use super::Failure;
use crate::config::{Settings, Sources};

/// Checks every environment file in `dir` (or those named), each layered over
/// `default.yaml` as `run` would read it.
pub(super) fn check(dir: &Path, envs: &[String]) -> Result<(), Failure> {
    let mut names: Vec<String> = envs.to_vec();
    if names.is_empty() {
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for e in entries.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                        if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                            names.push(stem.to_string());
                        }
                    }
                }
            }
            Err(e) => {
                return Err(Failure::usage(format!(
                    "{}: cannot read the policy directory: {e}",
                    dir.display()
                )));
            }
        }
        names.sort();
    }
    if names.is_empty() {
        return Err(Failure::usage(format!(
            "{}: no *.yaml policy files",
            dir.display()
        )));
    }
    let mut failed = 0;
    for env in &names {
        let mut sources = Sources::for_env(dir, env, None);
        sources.environment = false;
        match Settings::load(&sources) {
            Ok(l) => println!(
                "ok    {}  ({} rules)",
                dir.join(format!("{env}.yaml")).display(),
                l.rules.names().len() - 1
            ),
            Err(e) => {
                failed += 1;
                println!("error {e}");
            }
        }
    }
    if failed > 0 {
        return Err(Failure::failed(format!(
            "{failed} of {} policy files have mistakes",
            names.len()
        )));
    }
    Ok(())
}
