//! The Kafka broker: the one `scripts/test` started, or a private one.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The broker started by `scripts/test`.
pub fn bootstrap() -> String {
    std::env::var("TAILGATE_TEST_BOOTSTRAP").expect(
        "TAILGATE_TEST_BOOTSTRAP is not set: run these tests with scripts/test, which starts a Kafka broker",
    )
}

/// A private broker of one test binary (its own `KAFKA_STATE_DIR`), so that
/// stopping it does not disturb the tests sharing the broker `scripts/test`
/// started. Stopped when dropped.
pub struct Broker {
    /// Its `KAFKA_STATE_DIR`: data, configuration, pid and log.
    state: tempfile::TempDir,
    /// `127.0.0.1:<port>`, as `scripts/kafka start` printed it.
    pub address: String,
}

/// The repository's `scripts/kafka`.
fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka")
}

impl Broker {
    /// Runs `scripts/kafka <verb>` for this broker: its stdout.
    pub fn run(&self, verb: &str) -> String {
        let out = Command::new(kafka_script())
            .arg(verb)
            .env("KAFKA_STATE_DIR", self.state.path())
            .output()
            .expect("run scripts/kafka");
        assert!(
            out.status.success(),
            "scripts/kafka {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A private broker with `properties` (`name=value`) added to its
    /// server.properties.
    pub fn start_with(properties: &[&str]) -> Self {
        let mut b = Self {
            state: tempfile::tempdir().expect("tempdir"),
            address: String::new(),
        };
        let out = Command::new(kafka_script())
            .arg("start")
            .env("KAFKA_STATE_DIR", b.state.path())
            .env("KAFKA_EXTRA_PROPERTIES", properties.join("\n"))
            .output()
            .expect("run scripts/kafka");
        assert!(
            out.status.success(),
            "scripts/kafka start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        b.address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        b
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(kafka_script())
            .arg("stop")
            .env("KAFKA_STATE_DIR", self.state.path())
            .output();
    }
}

/// The SASL_SSL listener of the broker `scripts/test` started
/// (`KAFKA_SASL_SSL=1`; `scripts/kafka sasl` prints it): SCRAM-SHA-512 over
/// TLS, with a certificate signed by `ca`.
#[derive(Debug, Clone)]
pub struct SaslListener {
    pub address: String,
    /// The CA that signed the broker's certificate.
    pub ca: String,
    /// A CA that signed nothing of the broker's.
    pub other_ca: String,
    pub user: String,
    pub password: String,
}

impl SaslListener {
    /// librdkafka options for a client of this listener, trusting `ca`
    /// and logging in with `password`.
    pub fn options(&self, ca: &str, password: &str) -> Vec<String> {
        vec![
            "security.protocol=SASL_SSL".into(),
            "sasl.mechanism=SCRAM-SHA-512".into(),
            format!("sasl.username={}", self.user),
            format!("sasl.password={password}"),
            format!("ssl.ca.location={ca}"),
        ]
    }
}

/// The SASL_SSL listener `scripts/test` exported in `TAILGATE_TEST_SASL`.
pub fn sasl() -> SaslListener {
    let line = std::env::var("TAILGATE_TEST_SASL").expect(
        "TAILGATE_TEST_SASL is not set: run these tests with scripts/test, which starts the broker with a SASL_SSL listener",
    );
    let parts: Vec<&str> = line.split_whitespace().collect();
    let [address, ca, other_ca, user, password] = parts[..] else {
        panic!("TAILGATE_TEST_SASL: {line:?} is not `address ca other_ca user password`");
    };
    SaslListener {
        address: address.into(),
        ca: ca.into(),
        other_ca: other_ca.into(),
        user: user.into(),
        password: password.into(),
    }
}
