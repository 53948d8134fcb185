//! What the broker stored: the compression codec of each record batch of a
//! topic, read from its log segments with Kafka's own `DumpLogSegments` —
//! the one place that shows how a batch travelled, since consumers
//! decompress without a word.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's `scripts/kafka`.
fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka")
}

/// Runs `scripts/kafka <verb>` for the broker `scripts/test` started (the
/// environment's `KAFKA_STATE_DIR`, if any, is inherited): its stdout.
fn shared_broker(verb: &str) -> String {
    let out = Command::new(kafka_script())
        .arg(verb)
        .output()
        .expect("run scripts/kafka");
    assert!(
        out.status.success(),
        "scripts/kafka {verb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Record batches of `topic` on the shared broker, by compression codec as
/// Kafka names it (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
pub fn batch_codecs(topic: &str) -> BTreeMap<String, usize> {
    let data = PathBuf::from(shared_broker("datadir"));
    let prefix = format!("{topic}-");
    let mut segments = Vec::new();
    for dir in std::fs::read_dir(&data).expect("read the broker's data dir") {
        let dir = dir.expect("dir entry").path();
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let is_partition = name
            .strip_prefix(&prefix)
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !is_partition {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("read a partition dir") {
            let f = f.expect("dir entry").path();
            if f.extension().is_some_and(|e| e == "log") {
                segments.push(f);
            }
        }
    }
    assert!(
        !segments.is_empty(),
        "no log segments of {topic} in {data:?}"
    );
    let out = Command::new("java")
        .arg("-cp")
        .arg(shared_broker("classpath"))
        .arg("kafka.tools.DumpLogSegments")
        .arg("--files")
        .arg(
            segments
                .iter()
                .map(|p| p.to_string_lossy())
                .collect::<Vec<_>>()
                .join(","),
        )
        .output()
        .expect("run DumpLogSegments");
    assert!(
        out.status.success(),
        "DumpLogSegments: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut codecs = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rest) = line.split("compresscodec: ").nth(1) {
            let codec = rest.split_whitespace().next().unwrap_or_default();
            *codecs.entry(codec.to_lowercase()).or_insert(0) += 1;
        }
    }
    codecs
}
