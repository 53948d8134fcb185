use std::time::Duration;

use std::path::Path;

use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn sources(files: Vec<PathBuf>) -> Sources {
    Sources {
        files,
        environment: false,
        overrides: Vec::new(),
    }
}

#[test]
fn every_shipped_policy_file_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let env = p.file_stem().unwrap().to_str().unwrap().to_string();
        let mut s = Sources::for_env(&dir, &env, None);
        s.environment = false;
        let loaded = Settings::load(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(loaded.rules.names().len() > 1);
        n += 1;
    }
    assert!(n >= 4, "default, demo, production, staging, development");
}

#[test]
fn environment_file_overrides_default_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "default.yaml",
        "kafka: { brokers: 'a:1', input_topic: in }\ndecision: { wait: 30s }\nrules: [{name: all, sample: keep}]\n",
    );
    write(dir.path(), "prod.yaml", "kafka: { brokers: 'b:2' }\nrules: [{name: errors, when: {trace: {error: true}}, sample: keep}, {name: rest, sample: {rate: 0.1}}]\n");
    let l = Settings::load(&sources(Sources::for_env(dir.path(), "prod", None).files)).unwrap();
    assert_eq!(l.settings.kafka.brokers, "b:2");
    assert_eq!(l.settings.kafka.input_topic, "in", "kept from default.yaml");
    assert_eq!(l.settings.decision.wait, Duration::from_secs(30));
    assert_eq!(
        l.settings.decision.after_root,
        Duration::from_secs(5),
        "built-in default"
    );
    let names: Vec<&str> = l.rules.names().iter().map(|n| &**n).collect();
    assert_eq!(
        names,
        ["errors", "rest", "unmatched"],
        "the rule list is replaced, not merged"
    );
}

#[test]
fn environment_variables_override_files() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "x.yaml", "rules: [{name: all, sample: keep}]\n");
    // Only this test sets TAILGATE__ variables; other tests do not read them.
    std::env::set_var("TAILGATE__KAFKA__BROKERS", "env-broker:9092");
    std::env::set_var("TAILGATE__DECISION__WAIT", "12s");
    let l = Settings::load(&Sources {
        files: vec![f],
        environment: true,
        overrides: Vec::new(),
    });
    std::env::remove_var("TAILGATE__KAFKA__BROKERS");
    std::env::remove_var("TAILGATE__DECISION__WAIT");
    let l = l.unwrap();
    assert_eq!(l.settings.kafka.brokers, "env-broker:9092");
    assert_eq!(l.settings.decision.wait, Duration::from_secs(12));
}

#[test]
fn a_typo_is_reported_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.yaml",
        "rules:\n  - name: errors\n    when: { trace: { eror: true } }\n    sample: keep\n",
    );
    let e = Settings::load(&sources(vec![f.clone()]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("{}:3:", f.display())), "{e}");
    assert!(e.contains("unknown field `eror`"), "{e}");
}

#[test]
fn a_bad_rate_names_file_line_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.yaml",
        "rules:\n  - name: errors\n    sample: keep\n  - name: baseline\n    sample: { rate: 1.5 }\n",
    );
    let e = Settings::load(&sources(vec![f.clone()]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "{}:4: rule \"baseline\": sample.rate: 1.5 is outside (0, 1]; use `drop` to keep nothing",
            f.display()
        )
    );
}

#[test]
fn cross_field_mistakes_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "decision: { wait: 60s, max_trace_age: 30s }",
            "decision.max_trace_age (30s) is shorter than decision.wait (1m)",
        ),
        (
            "kafka: { input_topic: t, output_topic: t }",
            "tailgate would read its own output",
        ),
        (
            "decision: { clock_ahead: 1m }",
            "decision.clock_ahead (1m) must be shorter than decision.after_root (5s)",
        ),
        (
            "decision: { after_root: 1m, wait: 30s, clock_ahead: 40s }",
            "decision.clock_ahead (40s) must be shorter than decision.wait (30s)",
        ),
        (
            "decision: { decided_ttl: 0s }",
            "decision.decided_ttl must be longer than zero",
        ),
        (
            "decision: { wait: 0s }",
            "decision.wait must be longer than zero",
        ),
        (
            "kafka: { librdkafka_options: ['security.protocol'] }",
            "kafka.librdkafka_options: \"security.protocol\" is not `name=value`",
        ),
        ("", "the rule list is empty"),
        ("decision: { wait: soon }", "soon"),
    ] {
        let f = write(
            dir.path(),
            "x.yaml",
            &format!(
                "{text}\nrules: {}\n",
                if text.is_empty() {
                    "[]"
                } else {
                    "[{name: a, sample: keep}]"
                }
            ),
        );
        let e = Settings::load(&sources(vec![f])).unwrap_err().to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
}

#[test]
fn missing_file_is_named() {
    let e = Settings::load(&sources(vec![PathBuf::from("/nonexistent/prod.yaml")]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/prod.yaml: cannot read"), "{e}");
}

#[test]
fn options_are_name_value_pairs() {
    let m = KafkaSettings::options(&[
        "security.protocol=SASL_SSL".into(),
        " sasl.mechanism = PLAIN ".into(),
    ])
    .unwrap();
    assert_eq!(m["security.protocol"], "SASL_SSL");
    assert_eq!(m["sasl.mechanism"], "PLAIN");
}

/// Attribute names keep their dots and case through layering, and a file
/// without a rule list inherits the one below it.
#[test]
fn dotted_attribute_names_survive_layering() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "default.yaml",
        "rules:\n  - name: Health-Checks\n    when: { span: { attribute: { http.route: { in: [/healthz] } }, resource: { K8s.Pod.Name: { exists: true } } } }\n    sample: drop\n  - { name: rest, sample: keep }\n",
    );
    write(dir.path(), "prod.yaml", "kafka: { brokers: 'b:2' }\n");
    let l = Settings::load(&sources(Sources::for_env(dir.path(), "prod", None).files)).unwrap();
    let when = l.settings.rules[0].when.as_ref().unwrap();
    let span = when.span.as_ref().unwrap();
    assert!(span.attribute.as_ref().unwrap().contains_key("http.route"));
    assert!(span.resource.as_ref().unwrap().contains_key("K8s.Pod.Name"));
    assert_eq!(&*l.rules.names()[0], "Health-Checks");
}

/// `--brokers` is an override over files and environment, and a reload
/// (which loads from the same sources) keeps it.
#[test]
fn command_line_overrides_win() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "prod.yaml",
        "kafka: { brokers: 'file:1' }\nrules: [{name: all, sample: keep}]\n",
    );
    let mut s = sources(vec![f]);
    s.overrides.push(("kafka.brokers".into(), "cli:2".into()));
    let l = Settings::load(&s).unwrap();
    assert_eq!(l.settings.kafka.brokers, "cli:2");
    assert_eq!(l.sources.overrides, s.overrides);
}

/// `docs/configuration.md` has a row for every setting of every section, and
/// each documented default is the built-in one: writing it out explicitly
/// gives the same settings as leaving it out.
#[test]
fn the_documented_defaults_are_the_defaults() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    let defaults = serde_yaml::to_value(Settings::default()).unwrap();
    let sections = defaults.as_mapping().unwrap();
    assert_eq!(
        sections.len(),
        6,
        "kafka, buffer, decision, output, metrics, route"
    );
    for (section, fields) in sections {
        let section = section.as_str().unwrap();
        let rows = documented(&docs, section);
        let mut in_code: Vec<&str> = fields
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        let mut in_docs: Vec<&str> = rows.iter().map(|(f, _)| f.as_str()).collect();
        in_code.sort_unstable();
        in_docs.sort_unstable();
        assert_eq!(
            in_docs, in_code,
            "the fields of `{section}` in docs/configuration.md"
        );
        for (field, default) in &rows {
            let built_in = &fields[field.as_str()];
            match default.strip_prefix('`').and_then(|d| d.split('`').next()) {
                // Computed at run time (`<group_id>-<host name>`), or none.
                Some(d) if d.contains('<') => assert!(built_in.is_null(), "{section}.{field}"),
                None => assert!(
                    built_in.is_null(),
                    "{section}.{field}: documented {default:?}"
                ),
                Some(d) => {
                    let text = format!("{section}:\n  {field}: {d}\n");
                    let explicit: Settings = serde_yaml::from_str(&text)
                        .unwrap_or_else(|e| panic!("{section}.{field}: `{d}`: {e}"));
                    assert_eq!(
                        explicit,
                        Settings::default(),
                        "{section}.{field}: documented default `{d}`, built in {built_in:?}"
                    );
                }
            }
        }
    }
}

/// The (field, default) rows of the table under "## `section`".
fn documented(docs: &str, section: &str) -> Vec<(String, String)> {
    let heading = format!("## `{section}`");
    let start = docs
        .find(&heading)
        .unwrap_or_else(|| panic!("no {heading}"));
    docs[start + heading.len()..]
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let field = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((field.to_string(), cells.get(2)?.to_string()))
        })
        .collect()
}

/// A secret comes from the environment or a file, never written in a
/// settings file: `${env:NAME}` and `${file:PATH}` are put into option
/// values; `$${` is a literal `${`; what is missing is named, its value
/// never shown.
#[test]
fn option_values_expand_environment_variables_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    // SAFETY: this test alone sets this variable; nothing reads it concurrently.
    unsafe { std::env::set_var("TAILGATE_TEST_SASL_USER", "svc-tailgate") };
    let m = KafkaSettings::options(&[
        "sasl.username=${env:TAILGATE_TEST_SASL_USER}".into(),
        format!("sasl.password=${{file:{}}}", secret.display()),
        "client.id=a-${env:TAILGATE_TEST_SASL_USER}-b".into(),
        "literal=$${env:NOT_EXPANDED}".into(),
    ])
    .unwrap();
    assert_eq!(m["sasl.username"], "svc-tailgate");
    assert_eq!(
        m["sasl.password"], "s3cret",
        "the trailing line break is not part of it"
    );
    assert_eq!(m["client.id"], "a-svc-tailgate-b");
    assert_eq!(m["literal"], "${env:NOT_EXPANDED}");
    for (option, want) in [
        (
            "sasl.password=${env:TAILGATE_TEST_NOT_SET}",
            "the environment variable TAILGATE_TEST_NOT_SET",
        ),
        (
            "sasl.password=${file:/nonexistent/pw}",
            "cannot read /nonexistent/pw",
        ),
        (
            "sasl.password=${vault:x}",
            "only `${env:NAME}` and `${file:PATH}`",
        ),
        ("sasl.password=${env:X", "an unclosed `${`"),
    ] {
        let e = KafkaSettings::options(&[option.into()]).unwrap_err();
        assert!(
            e.starts_with("sasl.password: ") && e.contains(want),
            "{option}: {e}"
        );
    }
    let e = KafkaSettings::options(&["sasl.password s3cret".into()]).unwrap_err();
    assert!(
        !e.contains("s3cret") && e.contains("is not `name=value`"),
        "{e}"
    );
}
