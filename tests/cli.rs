//! The command line without a broker: `check` and `demo`.

use std::process::Command;

fn tailgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tailgate"))
}

#[test]
fn check_accepts_every_shipped_policy() {
    let out = tailgate()
        .args(["check", "--policies"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for env in ["default", "demo", "production", "staging", "development"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok ") && l.contains(&format!("/{env}.yaml"))),
            "{env} not checked:\n{text}"
        );
    }
}

#[test]
fn check_points_at_the_mistake() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.yaml"),
        "rules:\n  - name: all\n    sample: keep\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prod.yaml"),
        "rules:\n  - name: errors\n    when: { trace: { error: true } }\n    sample: keep\n  - name: slow\n    when: { trace: { duraton: { gt: 2s } } }\n    sample: keep\n",
    )
    .unwrap();
    let out = tailgate()
        .args(["check", "--policies"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("ok    ") && text.contains("default.yaml"),
        "{text}"
    );
    let want = format!("error {}:6:", dir.path().join("prod.yaml").display());
    assert!(text.contains(&want), "want {want:?} in:\n{text}");
    assert!(
        text.contains("unknown field `duraton`, expected `error` or `duration`"),
        "{text}"
    );
}

#[test]
fn demo_runs_on_the_in_process_broker() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tailgate()
        .args([
            "demo",
            "--duration",
            "7s",
            "--rate",
            "300",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The final table: every demo rule, and a total whose kept traces all reached the output topic.
    for rule in [
        "drop-health-checks",
        "errors",
        "slow-checkout",
        "slow",
        "baseline",
    ] {
        assert!(text.contains(rule), "{rule} missing:\n{text}");
    }
    let last_total = text
        .lines()
        .rfind(|l| l.starts_with("total"))
        .expect("a total line");
    let kept: f64 = last_total
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(kept > 0.0, "{text}");
    let last_io = text
        .lines()
        .rfind(|l| l.starts_with("input:"))
        .expect("an input line");
    assert!(
        last_io.contains(&format!("output topic: {} messages", kept as u64)),
        "{last_io}\n{text}"
    );
}
