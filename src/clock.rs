//! The stream clock of one partition: the time its traces' deadlines are
//! measured in.
//!
//! `decision.wait` and `decision.after_root` are measured on the
//! partition's own clock — the largest Kafka message timestamp read so far
//! on it, moving only forward — not on the wall clock of the moment a span
//! happened to be read. The Collector's exporter stamps each message when it
//! produces it, so the gaps a trace's spans have on this clock are the gaps
//! they had when they were written, whatever the read speed: a backlog read
//! after a restart, a crash or an outage, a partition paused while others
//! are served, a small fetch size. The same input gives the same decisions.
//!
//! Two things make it move besides messages:
//!
//! - While nothing more is to be read — the consumer reached the end of the
//!   partition, or the input is paused for memory — the clock also runs
//!   with wall-clock time, from where it stands, so a quiet partition still
//!   decides its traces. While the partition is behind, it moves only as
//!   messages are read: a gap in reading is not a gap in the stream.
//! - A message with no timestamp puts the clock at wall-clock time and lets
//!   it run with it until the next timestamped message (input without
//!   timestamps is decided by wall-clock time, as if read live).
//!
//! Bad timestamps are clamped against wall-clock time: more than
//! `decision.clock_ahead` in the future (a producer whose clock is wrong;
//! unclamped it would decide everything at once, and then nothing until the
//! world caught up), or more than `decision.clock_behind` in the past. Each
//! clamp is reported. `decision.max_trace_age` stays a bound in wall-clock
//! time from a trace's first read, kept by the buffer, so memory is bounded
//! even when a partition's clock stands still.
//!
//! Pure: wall-clock time comes in as an [`Instant`], its calendar reading
//! through an [`Epoch`]. Stream time goes out as an [`Instant`] too (on a
//! line of its own: see [`Time`]), so the buffer keeps one kind of deadline.

use std::time::{Duration, Instant, SystemTime};

/// Which clock deadlines are measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// The partition's stream clock (message timestamps).
    #[default]
    Stream,
    /// Wall-clock time when each span is read (tailgate before 0.2): a
    /// backlog read fast or slow is decided differently.
    Wall,
}

/// How a partition's clock is kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockConfig {
    pub mode: ClockMode,
    /// Timestamps further ahead of wall-clock time are clamped to it.
    pub ahead: Duration,
    /// Timestamps further behind wall-clock time are clamped to it.
    pub behind: Duration,
}

impl ClockConfig {
    /// Clamps a minute ahead: producers' clocks (NTP) and the broker's agree
    /// far better, and anything later is a wrong clock.
    pub const DEFAULT_AHEAD: Duration = Duration::from_secs(60);
    /// Clamps a week behind, Kafka's default retention: a backlog older
    /// than that is not in the topic any more, so its stamps are wrong.
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
    /// More than `decision.clock_ahead` ahead of wall-clock time.
    Ahead,
    /// More than `decision.clock_behind` behind it.
    Behind,
    /// No timestamp: wall-clock time was taken.
    Missing,
}

impl Clamp {
    pub const ALL: [Clamp; 3] = [Clamp::Ahead, Clamp::Behind, Clamp::Missing];

    pub fn as_str(self) -> &'static str {
        match self {
            Clamp::Ahead => "ahead",
            Clamp::Behind => "behind",
            Clamp::Missing => "missing",
        }
    }
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
    /// The input is paused for memory: nothing is read meanwhile.
    paused: bool,
    /// The last message had no timestamp.
    untimed: bool,
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
            paused: false,
            untimed: false,
        }
    }

    fn wall_mode(&self) -> bool {
        self.config.mode == ClockMode::Wall
    }

    fn runs(&self) -> bool {
        self.caught_up || self.paused || self.untimed
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

    /// A message stamped `timestamp_ms` (milliseconds since the Unix epoch;
    /// `None` or not positive when it has none) is read at `wall`: the time
    /// its spans are buffered at, and the clamp applied, if any.
    pub fn read(&mut self, timestamp_ms: Option<i64>, wall: Instant) -> (Time, Option<Clamp>) {
        if self.wall_mode() {
            return (Time::from(wall), None);
        }
        let now = self.epoch.at(wall);
        let (stamp, clamp) = match timestamp_ms.filter(|t| *t > 0) {
            None => (now, Some(Clamp::Missing)),
            Some(ms) => {
                let t = Duration::from_millis(ms.unsigned_abs());
                let (earliest, latest) = (
                    now.saturating_sub(self.config.behind),
                    now + self.config.ahead,
                );
                if t > latest {
                    (latest, Some(Clamp::Ahead))
                } else if t < earliest {
                    (earliest, Some(Clamp::Behind))
                } else {
                    (t, None)
                }
            }
        };
        let current = self.current(wall);
        self.reading = Some(current.map_or(stamp, |c| c.max(stamp)));
        if self.base.is_none() {
            self.base = self.reading.map(|r| (r, wall));
        }
        // More may follow: the clock stands until the consumer says it is at
        // the end, unless this message had no time to give.
        self.caught_up = false;
        self.untimed = clamp == Some(Clamp::Missing);
        self.running_since = self.runs().then_some(wall);
        (self.time(wall), clamp)
    }

    /// The consumer reached the end of the partition: nothing more to read
    /// for now, so the clock runs with wall-clock time until the next message.
    pub fn caught_up(&mut self, wall: Instant) {
        self.rebase(wall);
        self.caught_up = true;
        self.rebase(wall);
    }

    /// The input is paused (for memory) or resumed: while paused the clock
    /// runs with wall-clock time, since nothing is read that could move it.
    pub fn paused(&mut self, paused: bool, wall: Instant) {
        self.rebase(wall);
        self.paused = paused;
        self.rebase(wall);
    }

    /// Both clocks at `wall`.
    pub fn time(&self, wall: Instant) -> Time {
        if self.wall_mode() {
            return Time::from(wall);
        }
        match (self.current(wall), self.base) {
            (Some(now), Some((first, at))) => Time {
                stream: at + now.saturating_sub(first),
                wall,
            },
            // Nothing read yet: nothing buffered either.
            _ => Time::from(wall),
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
