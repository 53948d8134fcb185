//! Names and ports no one else uses.

use std::sync::atomic::{AtomicU64, Ordering};

/// A name no other test or run, in this process or another, uses. The clock
/// alone is not enough: tests start in parallel and a coarse clock gives two
/// of them the same reading (CI once created the same output topic twice),
/// so a per-process sequence number is part of the name too.
pub fn unique(prefix: &str) -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{seq}-{nanos}", std::process::id())
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Wall-clock time now, in milliseconds since the Unix epoch (what Kafka
/// timestamps and decision records carry).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}
