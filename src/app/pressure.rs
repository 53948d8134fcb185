//! Back-pressure over all the partitions' buffers of an instance: the input
//! is paused while memory is short. Process-wide, so the app's, not the
//! buffer's (each buffer only knows its own share).

/// Back-pressure over all buffers of an instance: above the high-water mark
/// the input partitions are paused (Kafka keeps the data), below the
/// low-water mark they are resumed. Between the two nothing changes, so the
/// input does not flap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backpressure {
    high: usize,
    low: usize,
    paused: bool,
}

/// What the consumer should do about the input partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Pause,
    Resume,
}

impl Backpressure {
    /// Marks as fractions of `budget`, `0 < low < high <= 1` (validated
    /// with the settings).
    pub fn new(budget: u64, high: f64, low: f64) -> Self {
        Self {
            high: (budget as f64 * high) as usize,
            low: (budget as f64 * low) as usize,
            paused: false,
        }
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The change to make, if any, now that the buffers hold `used` bytes.
    pub fn update(&mut self, used: usize) -> Option<Flow> {
        if !self.paused && used >= self.high {
            self.paused = true;
            Some(Flow::Pause)
        } else if self.paused && used <= self.low {
            self.paused = false;
            Some(Flow::Resume)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backpressure_pauses_above_high_water_and_resumes_below_low_water() {
        let mut b = Backpressure::new(1000, 0.9, 0.7);
        assert_eq!(b.update(500), None);
        assert_eq!(b.update(899), None);
        assert_eq!(b.update(900), Some(Flow::Pause));
        assert!(b.paused());
        assert_eq!(b.update(950), None, "already paused");
        assert_eq!(b.update(800), None, "between the marks: stay paused");
        assert_eq!(b.update(700), Some(Flow::Resume));
        assert_eq!(b.update(800), None, "between the marks: stay running");
        assert_eq!(b.update(1000), Some(Flow::Pause));
    }
}
