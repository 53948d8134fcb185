//! One HTTP/1.0 GET on a loopback port: tailgate's `/metrics`, `/healthz`
//! and `/readyz`, Prometheus's API.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// GET `path` on `127.0.0.1:<port>`, waiting at most `within` for the
/// answer: (status code, body), or `None` when nothing answered. HTTP/1.0,
/// so the body ends with the connection.
pub fn http_get(port: u16, path: &str, within: Duration) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(within)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}
