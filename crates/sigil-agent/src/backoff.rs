//! Exponential backoff with jitter, for reconnecting to the server.

use std::time::Duration;

/// Delays that double from `initial` up to `max`, each with up to 20% random jitter removed
/// so that many agents restarted together do not retry in step.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay to wait.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay.mul_f64(1.0 - 0.2 * unit_random())
    }

    /// Back to the initial delay, after a success.
    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// A random number in [0, 1).
pub(crate) fn unit_random() -> f64 {
    let mut bytes = [0u8; 4];
    // The system RNG does not fail on Linux; a zero is harmless jitter anyway.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_max_and_reset() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        for (delay, nominal) in delays.iter().zip([1, 2, 4, 5, 5]) {
            let nominal = Duration::from_secs(nominal);
            assert!(
                *delay <= nominal && *delay >= nominal.mul_f64(0.8),
                "{delay:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }
}
