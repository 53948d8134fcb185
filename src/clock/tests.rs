use super::*;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
/// 2026-01-01 in milliseconds since the Unix epoch.
const JAN: i64 = 1_767_225_600_000;
/// The wall in calendar milliseconds at `t0`: an hour after `JAN`.
const WALL: i64 = JAN + 3_600_000;

fn config() -> ClockConfig {
    ClockConfig {
        mode: ClockMode::Stream,
        ahead: 500 * MS,
        behind: 24 * 3600 * S,
    }
}

/// A clock whose wall is at `JAN` + 1 h at `t0`.
fn clock() -> (StreamClock, Instant) {
    let t0 = Instant::now();
    let epoch = Epoch {
        instant: t0,
        since_unix: Duration::from_millis(WALL as u64),
    };
    (StreamClock::new(config(), epoch), t0)
}

fn ms(c: &StreamClock, t: Instant) -> i64 {
    c.unix(c.time(t).stream).as_millis() as i64
}

#[test]
fn a_backlog_is_timed_by_its_timestamps_not_by_when_it_is_read() {
    let (mut c, t0) = clock();
    let a = c.read(Some(JAN), t0);
    assert_eq!(a.clamp, None);
    // Read a minute later, stamped 0.4 s later: 0.4 s passed.
    let b = c.read(Some(JAN + 400), t0 + 60 * S);
    assert_eq!(b.now.stream - a.now.stream, 400 * MS);
    assert_eq!(b.now.wall - a.now.wall, 60 * S);
    assert_eq!(b.own, b.now, "a trusted message's spans are at the clock");
    // Standing while behind, however long nothing is read.
    assert_eq!(c.time(t0 + 3600 * S).stream, b.now.stream);
    assert_eq!(c.wall_at(b.now.stream + S, t0 + 61 * S), None);
    assert_eq!(ms(&c, t0 + 3600 * S), JAN + 400, "its calendar reading");
}

#[test]
fn it_never_moves_back_for_a_stamp_or_two() {
    let (mut c, t0) = clock();
    let a = c.read(Some(JAN + 5_000), t0);
    let b = c.read(Some(JAN + 4_600), t0 + S);
    assert_eq!(
        b.clamp, None,
        "an earlier stamp within the step is no clamp"
    );
    assert_eq!(a.now.stream, b.now.stream);
    let d = c.read(Some(JAN - 600_000), t0 + S);
    assert_eq!(d.clamp, Some(Clamp::Outlier), "ten minutes behind");
    assert_eq!((d.now.stream, d.own.stream), (a.now.stream, a.now.stream));
}

#[test]
fn caught_up_it_runs_with_the_wall_from_where_it_stands() {
    let (mut c, t0) = clock();
    let a = c.read(Some(JAN), t0);
    c.caught_up(t0 + 10 * S);
    // From where it stood (JAN), not from the wall (an hour later).
    assert_eq!(c.time(t0 + 13 * S).stream - a.now.stream, 3 * S);
    assert_eq!(
        c.wall_at(a.now.stream + 5 * S, t0 + 13 * S),
        Some(t0 + 15 * S),
        "the next deadline in wall time"
    );
    // A message stops it again, at its own time or later.
    let b = c.read(Some(JAN + 1_000), t0 + 14 * S);
    assert_eq!(b.now.stream - a.now.stream, 4 * S, "never back");
    assert_eq!(c.time(t0 + 100 * S).stream, b.now.stream);
}

#[test]
fn a_worker_that_cannot_take_input_stops_its_clock_even_caught_up() {
    let (mut c, t0) = clock();
    let a = c.read(Some(JAN), t0);
    c.caught_up(t0);
    c.blocked(true, t0 + 2 * S);
    // Its output is out for an hour: no stream time passes meanwhile.
    assert_eq!(c.time(t0 + 3600 * S).stream - a.now.stream, 2 * S);
    assert_eq!(c.wall_at(a.now.stream + 10 * S, t0 + 3600 * S), None);
    c.blocked(false, t0 + 3700 * S);
    assert_eq!(c.time(t0 + 3701 * S).stream - a.now.stream, 3 * S);
}

#[test]
fn one_stamp_far_ahead_moves_nothing_but_its_own_spans() {
    let (mut c, t0) = clock();
    let a = c.read(Some(JAN), t0);
    // Ten minutes ahead of its neighbours (still behind the wall: a backlog).
    let b = c.read(Some(JAN + 600_000), t0);
    assert_eq!(b.clamp, Some(Clamp::Outlier));
    assert_eq!(b.now, a.now, "the clock stays");
    assert_eq!(
        b.own.stream - a.now.stream,
        600 * S,
        "its spans wait from its own time"
    );
    let d = c.read(Some(JAN + 400), t0);
    assert_eq!((d.clamp, d.now.stream - a.now.stream), (None, 400 * MS));
}

#[test]
fn live_a_stamp_ahead_of_the_wall_moves_the_clock_no_further_than_clock_ahead() {
    let (mut c, t0) = clock();
    let a = c.read(Some(WALL - 100), t0);
    c.caught_up(t0);
    // Microseconds written as milliseconds: ~55 000 years ahead.
    let b = c.read(Some(WALL * 1000), t0 + S);
    assert_eq!(b.clamp, Some(Clamp::Ahead));
    assert!(b.now.stream - a.now.stream <= S + 100 * MS);
    assert!(b.own.stream - a.now.stream <= S + 600 * MS);
    // Even a run of them takes it no further than the wall plus clock_ahead.
    for _ in 0..2 * CONFIRM {
        c.read(Some(WALL * 1000), t0 + S);
    }
    assert!(
        ms(&c, t0 + S) <= WALL + 1_000 + 500,
        "{}",
        ms(&c, t0 + S) - WALL
    );
}

#[test]
fn a_run_of_stamps_that_agree_is_a_real_gap_and_moves_the_clock() {
    let (mut c, t0) = clock();
    c.read(Some(JAN), t0);
    // The partition was quiet for five minutes, in a backlog.
    for i in 0..CONFIRM - 1 {
        let r = c.read(Some(JAN + 300_000 + i64::from(i) * 100), t0);
        assert_eq!(r.clamp, Some(Clamp::Outlier));
        assert_eq!(ms(&c, t0), JAN);
    }
    let r = c.read(Some(JAN + 300_000 + 700 + 50), t0);
    assert_eq!(r.clamp, Some(Clamp::Jump));
    assert_eq!(ms(&c, t0), JAN + 300_300, "at the middle one of them");
    // A trusted stamp in between starts the count again.
    let (mut c, t0) = clock();
    c.read(Some(JAN), t0);
    for i in 0..3 * CONFIRM {
        let stamp = if i % (CONFIRM - 1) == 0 {
            JAN + 100
        } else {
            JAN + 600_000
        };
        c.read(Some(stamp), t0);
    }
    assert_eq!(ms(&c, t0), JAN + 100, "never {CONFIRM} in a row");
}

#[test]
fn a_first_stamp_far_ahead_is_outvoted_by_the_stamps_after_it() {
    let (mut c, t0) = clock();
    c.read(Some(JAN + 600_000), t0);
    for i in 0..CONFIRM {
        c.read(Some(JAN + i64::from(i) * 10), t0);
    }
    assert_eq!(ms(&c, t0), JAN + 30, "back on the stream's own time");
}

/// Found by the model property (a backlog an hour behind the wall whose
/// first message had no stamp): the clock started at the wall, and the
/// backlog's stamps, a run behind it, confirmed a jump back to their middle
/// one; the last message of the run, seconds past that middle, was placed
/// at the clock — seconds before its own time — and its trace decided that
/// much early. A message of a run is placed no earlier than its own stamp,
/// whichever way the clock jumps.
#[test]
fn the_message_that_confirms_a_jump_back_is_placed_at_its_own_time() {
    let (mut c, t0) = clock();
    c.read(None, t0);
    assert_eq!(ms(&c, t0), WALL, "no stamp: the wall's reading");
    let stamps = [0, 0, 0, 1_682, 1_732, 4_278, 4_660, 7_265];
    let mut last = None;
    for s in stamps {
        last = Some(c.read(Some(JAN + s), t0));
    }
    let r = last.expect("read");
    assert_eq!(r.clamp, Some(Clamp::Jump));
    assert_eq!(ms(&c, t0), JAN + 1_682, "at the middle one of them");
    assert_eq!(
        c.unix(r.own.stream).as_millis() as i64,
        JAN + 7_265,
        "its spans at their own time, not the middle one's"
    );
    // A run ahead places its last message at its own time as before.
    let (mut c, t0) = clock();
    c.read(Some(JAN), t0);
    let mut last = None;
    for i in 0..CONFIRM {
        last = Some(c.read(Some(JAN + 300_000 + i64::from(i) * 100), t0));
    }
    let r = last.expect("read");
    assert_eq!(c.unix(r.own.stream).as_millis() as i64, JAN + 300_700);
}

#[test]
fn stamps_it_cannot_use_move_nothing() {
    let (mut c, t0) = clock();
    let a = c.read(Some(JAN), t0);
    for stamp in [None, Some(0), Some(-5), Some(1)] {
        // Read at once after the last: it runs with the wall only meanwhile.
        let r = c.read(stamp, t0);
        let want = if stamp == Some(1) {
            Clamp::Behind
        } else {
            Clamp::Missing
        };
        assert_eq!(r.clamp, Some(want), "{stamp:?}");
        assert_eq!((r.now.stream, r.own.stream), (a.now.stream, a.now.stream));
    }
    // The stamps resume: the clock goes on from its own time.
    let b = c.read(Some(JAN + 300), t0);
    assert_eq!(b.now.stream - a.now.stream, Duration::from_millis(300));
}

#[test]
fn without_timestamps_it_is_the_wall_clock() {
    let (mut c, t0) = clock();
    let a = c.read(None, t0);
    assert_eq!(a.clamp, Some(Clamp::Missing));
    assert_eq!(c.time(t0 + 7 * S).stream - a.now.stream, 7 * S);
    assert_eq!(ms(&c, t0), WALL, "from the wall's reading");
    let r = c.read(Some(0), t0 + 7 * S);
    assert_eq!(r.clamp, Some(Clamp::Missing), "0 is no timestamp");
}

#[test]
fn preview_is_where_the_first_message_puts_the_clock() {
    let (c, t0) = clock();
    assert_eq!(c.preview(Some(JAN), t0), Duration::from_millis(JAN as u64));
    assert_eq!(c.preview(None, t0), Duration::from_millis(WALL as u64));
    assert_eq!(
        c.preview(Some(WALL * 1000), t0),
        Duration::from_millis(WALL as u64) + 500 * MS
    );
    let (mut c, t0) = clock();
    c.read(Some(JAN), t0);
    assert_eq!(c.preview(Some(WALL), t0), Duration::from_millis(JAN as u64));
}

#[test]
fn the_wall_mode_ignores_timestamps() {
    let t0 = Instant::now();
    let mut c = StreamClock::new(ClockConfig::wall(), Epoch::now());
    let r = c.read(Some(JAN), t0);
    assert_eq!(
        (r.now, r.own, r.clamp),
        (Time::from(t0), Time::from(t0), None)
    );
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
