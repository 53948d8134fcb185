//! The stream clock of one partition: the time its traces' deadlines, and
//! how long its decisions are remembered, are measured in.
//!
//! `decision.wait`, `decision.after_root` and `decision.decided_ttl` are
//! measured on the partition's own clock — the Kafka message timestamps
//! read so far on it, moving only as far as they can be trusted — not on
//! the wall clock of the moment a span happened to be read. The
//! Collector's exporter stamps each message when it produces it, so the
//! gaps a trace's spans have on this clock are the gaps they had when they
//! were written, whatever the read speed: a backlog read after a restart, a
//! crash or an outage, a partition paused while others are served, a small
//! fetch size. The same input gives the same decisions.
//!
//! A timestamp the clock cannot trust moves nothing that the trace's own
//! spans would not have moved:
//!
//! - A stamp within `decision.clock_ahead` of the clock's reading (either
//!   side) is trusted: the clock moves up to it (never back).
//! - A stamp further ahead — one producer's clock is wrong, microseconds
//!   written as milliseconds, an outlier — is an *outlier*: the clock stays,
//!   and only the message's own spans are placed at its time (so only their
//!   trace waits longer). A stamp further behind moves nothing either.
//! - [`CONFIRM`] stamps in a row on the same side confirm each other: the
//!   stream really moved (a gap in a backlog, the producers' clocks shifted
//!   together), and the clock jumps to the middle one of them — counted as
//!   a `jump`; the message that confirms it places its own spans at its own
//!   stamp if that is later. A single producer that is wrong is outvoted by
//!   the others.
//! - No stamp ever takes the clock further than `decision.clock_ahead`
//!   ahead of wall-clock time; a stamp more than `decision.clock_behind`
//!   behind it, or none at all, counts as no stamp: it moves nothing, and
//!   its spans are placed at the clock's reading.
//!
//! Besides messages, the clock runs with wall-clock time, from where it
//! stands, while nothing more can be read: the consumer reached the end of
//! the partition; and after a message
//! with no usable stamp, until the next with one (input without timestamps
//! is decided by wall-clock time, as if read live; in a backlog the next
//! stamp comes at once, so the clock hardly moves). While the worker cannot take input
//! (its produces are stuck: an outage of the output) it stands, whatever
//! else holds: a gap in reading is not a gap in the stream. While the
//! input is paused for memory it stands too (the partition decides its
//! oldest traces for memory instead: see `Partition::input_paused`).
//! `decision.max_trace_age` stays a bound in wall-clock time from a trace's
//! first read, kept by the buffer, so memory is bounded even when a
//! partition's clock stands still.
//!
//! Pure: wall-clock time comes in as an [`Instant`], its calendar reading
//! through an [`Epoch`]. Stream time goes out as an [`Instant`] too (on a
//! line of its own: see [`Time`]), so the buffer keeps one kind of deadline;
//! [`StreamClock::unix`] reads a point of that line as calendar time.

use std::time::{Duration, Instant, SystemTime};

/// Which clock deadlines are measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// The partition's stream clock (message timestamps).
    #[default]
    Stream,
    /// Wall-clock time when each span is read (as tailgate first decided): a
    /// backlog read fast or slow is decided differently.
    Wall,
}

/// How a partition's clock is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockConfig {
    pub mode: ClockMode,
    /// The largest step ahead one timestamp is trusted with: of its
    /// partition's clock, and of wall-clock time.
    pub ahead: Duration,
    /// Timestamps further behind wall-clock time count as none.
    pub behind: Duration,
}

impl ClockConfig {
    /// Half a second: consecutive messages of a busy partition are stamped
    /// far closer than that (and while it is caught up the clock runs with
    /// the wall between them), producers' clocks (NTP) agree far better,
    /// and it is well under the shortest wait it protects (`after_root`:
    /// 5 s by default, 1 s in the demo). A partition that gets fewer than
    /// two messages a second is, in a backlog, decided a few messages late.
    pub const DEFAULT_AHEAD: Duration = Duration::from_millis(500);
    /// A week behind, Kafka's default retention: a backlog older than that
    /// is not in the topic any more, so its stamps are wrong.
    pub const DEFAULT_BEHIND: Duration = Duration::from_secs(7 * 24 * 3600);

    /// Deadlines on wall-clock time, timestamps ignored.
    pub fn wall() -> Self {
        Self {
            mode: ClockMode::Wall,
            ahead: Duration::ZERO,
            behind: Duration::ZERO,
        }
    }
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            mode: ClockMode::Stream,
            ahead: Self::DEFAULT_AHEAD,
            behind: Self::DEFAULT_BEHIND,
        }
    }
}

/// Ties the monotonic clock to calendar time: `instant` was `since_unix`
/// after the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    pub instant: Instant,
    pub since_unix: Duration,
}

impl Epoch {
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            since_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    /// The calendar reading (since the Unix epoch) of `wall`.
    pub fn at(&self, wall: Instant) -> Duration {
        match wall.checked_duration_since(self.instant) {
            Some(later) => self.since_unix + later,
            None => self
                .since_unix
                .saturating_sub(self.instant.duration_since(wall)),
        }
    }
}

/// Both clocks at one moment: `stream` for the deadlines `decision.wait`
/// and `decision.after_root` count on, `wall` for `decision.max_trace_age`.
/// With the wall-clock mode, or where there is no stream (tests), they are
/// the same instant.
///
/// `stream` is an `Instant` on a line of its own: the partition's first
/// reading sits at the wall instant it was taken, and the line moves as the
/// stream clock does. Only differences and order within one partition
/// mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub stream: Instant,
    pub wall: Instant,
}

impl From<Instant> for Time {
    fn from(t: Instant) -> Self {
        Self { stream: t, wall: t }
    }
}

/// A timestamp the clock did not take as it was; a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Clamp {
    /// More than `decision.clock_ahead` ahead of wall-clock time: taken as
    /// that far ahead at most.
    Ahead,
    /// More than `decision.clock_behind` behind it: taken as none.
    Behind,
    /// No timestamp.
    Missing,
    /// More than `decision.clock_ahead` away from its partition's clock
    /// (and not yet confirmed by others): it moved nothing.
    Outlier,
    /// The last of [`CONFIRM`] stamps in a row that agreed the stream had
    /// moved: the clock jumped.
    Jump,
}

impl Clamp {
    pub const ALL: [Clamp; 5] = [
        Clamp::Ahead,
        Clamp::Behind,
        Clamp::Missing,
        Clamp::Outlier,
        Clamp::Jump,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Clamp::Ahead => "ahead",
            Clamp::Behind => "behind",
            Clamp::Missing => "missing",
            Clamp::Outlier => "outlier",
            Clamp::Jump => "jump",
        }
    }
}

/// How many messages in a row must agree before the clock believes the
/// stream moved further than `decision.clock_ahead` at once. A producer with a wrong clock moves it only
/// if it writes this many messages in a row to the partition with no other
/// producer's between them.
pub const CONFIRM: u32 = 8;

/// What reading one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// The partition's clock after the message: what is due by now is decided.
    pub now: Time,
    /// Where the message's own spans are placed: the clock's reading, or
    /// for an outlier ahead of it, the message's own (bounded) stamp.
    pub own: Time,
    /// How its stamp was not taken as it was, if it was not.
    pub clamp: Option<Clamp>,
}

/// Stamps in a row on one side of the clock, further than
/// `decision.clock_ahead` from it.
#[derive(Debug, Clone)]
struct Run {
    ahead: bool,
    /// Their stamps; once [`CONFIRM`] agree the clock jumps to the middle
    /// one (a stray stamp among them does not decide where).
    stamps: Vec<Duration>,
}

/// One partition's clock.
#[derive(Debug, Clone)]
pub struct StreamClock {
    config: ClockConfig,
    epoch: Epoch,
    /// Stream time (since the Unix epoch) when last set; `None` before the
    /// first message.
    reading: Option<Duration>,
    /// Where the stream line starts: the first reading, and the wall
    /// instant it was taken at.
    base: Option<(Duration, Instant)>,
    /// Running with wall-clock time since this wall instant, from `reading`.
    running_since: Option<Instant>,
    /// The consumer reached the end of the partition (no message since).
    caught_up: bool,
    /// The worker cannot take input (its produces are stuck): whether more
    /// is waiting is not known, so the clock stands.
    blocked: bool,
    /// The last message had no usable timestamp.
    untimed: bool,
    /// Outliers in a row on one side.
    run: Option<Run>,
}

impl StreamClock {
    pub fn new(config: ClockConfig, epoch: Epoch) -> Self {
        Self {
            config,
            epoch,
            reading: None,
            base: None,
            running_since: None,
            caught_up: false,
            blocked: false,
            untimed: false,
            run: None,
        }
    }

    fn wall_mode(&self) -> bool {
        self.config.mode == ClockMode::Wall
    }

    fn runs(&self) -> bool {
        (self.caught_up || self.untimed) && !self.blocked
    }

    /// Stream time now (since the Unix epoch), if anything was read.
    fn current(&self, wall: Instant) -> Option<Duration> {
        let r = self.reading?;
        Some(match self.running_since {
            Some(since) => r + wall.saturating_duration_since(since),
            None => r,
        })
    }

    /// Fixes the reading at `wall` and runs on from there if it runs.
    fn rebase(&mut self, wall: Instant) {
        self.reading = self.current(wall);
        self.running_since = (self.runs() && self.reading.is_some()).then_some(wall);
    }

    /// A stamp as the clock may use it, with its clamp: `None` for no
    /// usable stamp; never more than `clock_ahead` ahead of the wall.
    fn usable(
        &self,
        timestamp_ms: Option<i64>,
        now: Duration,
    ) -> (Option<Duration>, Option<Clamp>) {
        match timestamp_ms.filter(|t| *t > 0) {
            None => (None, Some(Clamp::Missing)),
            Some(ms) => {
                let t = Duration::from_millis(ms.unsigned_abs());
                let latest = now + self.config.ahead;
                if t > latest {
                    (Some(latest), Some(Clamp::Ahead))
                } else if t < now.saturating_sub(self.config.behind) {
                    (None, Some(Clamp::Behind))
                } else {
                    (Some(t), None)
                }
            }
        }
    }

    /// A message stamped `timestamp_ms` (milliseconds since the Unix epoch;
    /// `None` or not positive when it has none) is read at `wall`.
    pub fn read(&mut self, timestamp_ms: Option<i64>, wall: Instant) -> Reading {
        if self.wall_mode() {
            let now = Time::from(wall);
            return Reading {
                now,
                own: now,
                clamp: None,
            };
        }
        let (stamp, mut clamp) = self.usable(timestamp_ms, self.epoch.at(wall));
        let current = self.current(wall);
        // More may follow: the clock stands until the consumer says it is at
        // the end.
        self.caught_up = false;
        let mut own = None;
        self.reading = Some(match (stamp, current) {
            // Nothing to go by yet: the wall's reading.
            (None, None) => {
                self.untimed = true;
                self.epoch.at(wall)
            }
            (None, Some(c)) => {
                self.untimed = true;
                c
            }
            (Some(t), None) => {
                self.untimed = false;
                t
            }
            (Some(t), Some(c)) => {
                self.untimed = false;
                let step = self.config.ahead;
                if t <= c + step && t + step >= c {
                    self.run = None;
                    c.max(t)
                } else {
                    let ahead = t > c;
                    let mut run = match self.run.take() {
                        Some(r) if r.ahead == ahead => r,
                        _ => Run {
                            ahead,
                            stamps: Vec::with_capacity(CONFIRM as usize),
                        },
                    };
                    run.stamps.push(t);
                    if run.stamps.len() >= CONFIRM as usize {
                        // Confirmed: the stream is there.
                        clamp = Some(Clamp::Jump);
                        run.stamps.sort_unstable();
                        let to = run.stamps[(run.stamps.len() - 1) / 2];
                        // The clock lands on the run's middle stamp; this
                        // message, one of the run, is placed at its own
                        // stamp if that is later — never earlier than its
                        // time, whichever way the clock jumped (a jump back
                        // to the middle of a run that reached past it would
                        // place its spans seconds early, and decide their
                        // trace before the stream reached its deadline).
                        if t > to {
                            own = Some(t);
                        }
                        to
                    } else {
                        self.run = Some(run);
                        clamp = clamp.or(Some(Clamp::Outlier));
                        if ahead {
                            // Its own spans wait from its own time; the
                            // clock does not move.
                            own = Some(t);
                        }
                        c
                    }
                }
            }
        });
        if self.base.is_none() {
            self.base = self.reading.map(|r| (r, wall));
        }
        self.running_since = self.runs().then_some(wall);
        let now = self.time(wall);
        let own = match own {
            Some(t) => Time {
                stream: self.instant_of(t).unwrap_or(now.stream),
                wall,
            },
            None => now,
        };
        Reading { now, own, clamp }
    }

    /// The calendar reading its first message would give the clock, read at
    /// `wall`; where it stands once anything was read. Where a partition's
    /// remembered decisions are counted from.
    pub fn preview(&self, timestamp_ms: Option<i64>, wall: Instant) -> Duration {
        if self.wall_mode() {
            return self.epoch.at(wall);
        }
        if let Some(c) = self.current(wall) {
            return c;
        }
        let now = self.epoch.at(wall);
        self.usable(timestamp_ms, now).0.unwrap_or(now)
    }

    /// The consumer reached the end of the partition: nothing more to read
    /// for now, so the clock runs with wall-clock time until the next message.
    pub fn caught_up(&mut self, wall: Instant) {
        self.rebase(wall);
        self.caught_up = true;
        self.rebase(wall);
    }

    /// The worker can (not) take input: while it cannot, the clock stands.
    pub fn blocked(&mut self, blocked: bool, wall: Instant) {
        if self.blocked != blocked {
            self.rebase(wall);
            self.blocked = blocked;
            self.rebase(wall);
        }
    }

    /// The stream line's instant of calendar reading `t`.
    fn instant_of(&self, t: Duration) -> Option<Instant> {
        let (first, at) = self.base?;
        if t >= first {
            at.checked_add(t - first)
        } else {
            at.checked_sub(first - t)
        }
    }

    /// Both clocks at `wall`.
    pub fn time(&self, wall: Instant) -> Time {
        if self.wall_mode() {
            return Time::from(wall);
        }
        match self.current(wall).and_then(|now| self.instant_of(now)) {
            Some(stream) => Time { stream, wall },
            // Nothing read yet: nothing buffered either.
            None => Time::from(wall),
        }
    }

    /// The calendar reading (since the Unix epoch) of a point of the
    /// stream line (for the wall mode, of wall-clock time): what decisions
    /// are stamped with, and remembered for `decided_ttl` after.
    pub fn unix(&self, stream: Instant) -> Duration {
        match self.base {
            Some((first, at)) if !self.wall_mode() => match stream.checked_duration_since(at) {
                Some(later) => first + later,
                None => first.saturating_sub(at.duration_since(stream)),
            },
            _ => self.epoch.at(stream),
        }
    }

    /// The wall instant at which stream time reaches `deadline`, as far as
    /// can be told at `wall`: `None` while the clock stands (it then moves
    /// only as messages are read).
    pub fn wall_at(&self, deadline: Instant, wall: Instant) -> Option<Instant> {
        if self.wall_mode() {
            return Some(deadline);
        }
        if self.running_since.is_none() && self.reading.is_some() {
            return None;
        }
        let now = self.time(wall).stream;
        Some(wall + deadline.saturating_duration_since(now))
    }

    /// The stream clock's lag behind wall-clock time at `wall`.
    pub fn lag(&self, wall: Instant) -> Duration {
        match self.current(wall) {
            Some(now) if !self.wall_mode() => self.epoch.at(wall).saturating_sub(now),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests;
