use super::*;

const S: Duration = Duration::from_secs(1);
/// 2026-01-01 in milliseconds since the Unix epoch.
const JAN: i64 = 1_767_225_600_000;

fn config() -> ClockConfig {
    ClockConfig {
        mode: ClockMode::Stream,
        ahead: 60 * S,
        behind: 24 * 3600 * S,
    }
}

/// A clock whose wall is at `JAN` + 1 h at `t0`.
fn clock() -> (StreamClock, Instant) {
    let t0 = Instant::now();
    let epoch = Epoch {
        instant: t0,
        since_unix: Duration::from_millis(JAN as u64) + 3600 * S,
    };
    (StreamClock::new(config(), epoch), t0)
}

#[test]
fn a_backlog_is_timed_by_its_timestamps_not_by_when_it_is_read() {
    let (mut c, t0) = clock();
    let (a, clamp) = c.read(Some(JAN), t0);
    assert_eq!(clamp, None);
    // Read a minute later, stamped two seconds later: two seconds passed.
    let (b, _) = c.read(Some(JAN + 2_000), t0 + 60 * S);
    assert_eq!(b.stream - a.stream, 2 * S);
    assert_eq!(b.wall - a.wall, 60 * S);
    // Standing while behind, however long nothing is read.
    assert_eq!(c.time(t0 + 3600 * S).stream, b.stream);
    assert_eq!(c.wall_at(b.stream + S, t0 + 61 * S), None);
}

#[test]
fn it_never_moves_back() {
    let (mut c, t0) = clock();
    let (a, _) = c.read(Some(JAN + 5_000), t0);
    let (b, clamp) = c.read(Some(JAN), t0 + S);
    assert_eq!(clamp, None, "an earlier stamp is no clamp");
    assert_eq!(a.stream, b.stream);
}

#[test]
fn caught_up_it_runs_with_the_wall_from_where_it_stands() {
    let (mut c, t0) = clock();
    let (a, _) = c.read(Some(JAN), t0);
    c.caught_up(t0 + 10 * S);
    // From where it stood (JAN), not from the wall (an hour later).
    assert_eq!(c.time(t0 + 13 * S).stream - a.stream, 3 * S);
    assert_eq!(
        c.wall_at(a.stream + 5 * S, t0 + 13 * S),
        Some(t0 + 15 * S),
        "the next deadline in wall time"
    );
    // A message stops it again, at its own time or later.
    let (b, _) = c.read(Some(JAN + 1_000), t0 + 14 * S);
    assert_eq!(b.stream - a.stream, 4 * S, "never back");
    assert_eq!(c.time(t0 + 100 * S).stream, b.stream);
}

#[test]
fn paused_for_memory_it_runs_and_resumed_it_stands() {
    let (mut c, t0) = clock();
    let (a, _) = c.read(Some(JAN), t0);
    c.paused(true, t0 + S);
    assert_eq!(c.time(t0 + 4 * S).stream - a.stream, 3 * S);
    c.paused(false, t0 + 4 * S);
    assert_eq!(c.time(t0 + 40 * S).stream - a.stream, 3 * S);
}

#[test]
fn bad_timestamps_are_clamped_against_the_wall() {
    let (mut c, t0) = clock();
    let wall = JAN + 3_600_000;
    let (_, clamp) = c.read(Some(wall + 86_400_000 * 365), t0);
    assert_eq!(clamp, Some(Clamp::Ahead));
    assert_eq!(
        c.lag(t0),
        Duration::ZERO,
        "a year ahead is taken as a minute ahead"
    );
    let (mut c, t0) = clock();
    let (a, clamp) = c.read(Some(1), t0);
    assert_eq!(clamp, Some(Clamp::Behind));
    assert_eq!(c.lag(t0), 24 * 3600 * S);
    let (b, _) = c.read(Some(wall), t0);
    assert_eq!(b.stream - a.stream, 24 * 3600 * S);
}

#[test]
fn without_timestamps_it_is_the_wall_clock() {
    let (mut c, t0) = clock();
    let (a, clamp) = c.read(None, t0);
    assert_eq!(clamp, Some(Clamp::Missing));
    assert_eq!(c.time(t0 + 7 * S).stream - a.stream, 7 * S);
    let (_, clamp) = c.read(Some(0), t0 + 7 * S);
    assert_eq!(clamp, Some(Clamp::Missing), "0 is no timestamp");
}

#[test]
fn the_wall_mode_ignores_timestamps() {
    let t0 = Instant::now();
    let mut c = StreamClock::new(ClockConfig::wall(), Epoch::now());
    let (a, clamp) = c.read(Some(JAN), t0);
    assert_eq!((a, clamp), (Time::from(t0), None));
    assert_eq!(c.time(t0 + S), Time::from(t0 + S));
    assert_eq!(c.wall_at(t0 + 5 * S, t0 + S), Some(t0 + 5 * S));
}

#[test]
fn the_epoch_reads_instants_before_and_after_it() {
    let e = Epoch::now();
    assert_eq!(e.at(e.instant + S), e.since_unix + S);
    if let Some(before) = e.instant.checked_sub(S) {
        assert_eq!(e.at(before), e.since_unix - S);
    }
}
