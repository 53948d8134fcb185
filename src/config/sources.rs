//! Where settings come from (files, environment, command line), and each
//! file read on its own first, so that a mistake carries its line and column.

use std::path::{Path, PathBuf};

use super::{ConfigError, Settings};
use crate::rules::RuleSpec;

/// Where settings come from, lowest precedence first.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub files: Vec<PathBuf>,
    /// Read `TAILGATE__...` environment variables.
    pub environment: bool,
    /// Settings given on the command line (`kafka.brokers` from `--brokers`),
    /// over everything else; kept here so a reload reads them too.
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// `<dir>/default.yaml` (if present) under `<dir>/<env>.yaml`, then `extra`.
    pub fn for_env(dir: &Path, env: &str, extra: Option<&Path>) -> Self {
        let mut files = Vec::new();
        let default = dir.join("default.yaml");
        if env != "default" && default.exists() {
            files.push(default);
        }
        files.push(dir.join(format!("{env}.yaml")));
        files.extend(extra.map(Path::to_path_buf));
        Self {
            files,
            environment: true,
            overrides: Vec::new(),
        }
    }

    /// The sources as a person reads them, e.g. `a.yaml + b.yaml + TAILGATE__* environment`.
    pub fn describe(&self) -> String {
        let mut s: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        if self.environment {
            s.push("TAILGATE__* environment".into());
        }
        s.join(" + ")
    }
}

/// One file, read on its own so that mistakes carry its line and column.
pub(super) struct FileLayer {
    pub path: PathBuf,
    pub text: String,
    /// The file's rule list, if it has one.
    pub rules: Option<Vec<RuleSpec>>,
}

pub(super) fn check_file(path: &Path) -> Result<FileLayer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let mut rules = None;
    if !text.trim().is_empty() {
        let parsed = serde_yaml::from_str::<Settings>(&text).map_err(|e| ConfigError::Syntax {
            file: path.to_path_buf(),
            at: e.location().map(|l| (l.line(), l.column())),
            message: e.to_string(),
        })?;
        if text.lines().any(|l| l.starts_with("rules:")) {
            rules = Some(parsed.rules);
        }
    }
    Ok(FileLayer {
        path: path.to_path_buf(),
        text,
        rules,
    })
}

/// The line on which rule `name` is defined, to point a person at it.
pub(super) fn rule_line(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches('-').trim_start();
            l.strip_prefix("name:")
                .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'') == name)
                .unwrap_or(false)
        })
        .map(|i| i + 1)
}
