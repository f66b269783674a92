//! The one backoff helper: retry delays of deliveries (the schedule with
//! jitter, or a longer `Retry-After`) and the waits between retries of an
//! operation on Redis or the database while it is away.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// Longest `Retry-After` honoured: a receiver cannot park a job for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The delay before retry `retry_number` (1-based; 0 is treated as 1): the
/// schedule's entry with ±10% jitter, or the receiver's `Retry-After` when
/// that is longer. Past the end of the schedule the last entry applies.
pub fn retry_delay(
    schedule: &[Duration],
    retry_number: usize,
    retry_after: Option<Duration>,
) -> Duration {
    let index = retry_number.max(1) - 1;
    let base = schedule
        .get(index)
        .or(schedule.last())
        .copied()
        .unwrap_or(Duration::ZERO);
    let jitter = rand::rng().random_range(0.9..=1.1);
    let delay = base.mul_f64(jitter);
    match retry_after {
        Some(ra) if ra > delay => ra.min(MAX_RETRY_AFTER),
        _ => delay,
    }
}

/// Doubling waits from `first` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    first: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            next: first,
            first,
            max,
        }
    }

    /// The wait to use now; the following one is twice as long (up to the cap).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps for [`Backoff::next_wait`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }
}

/// Runs `op` until it succeeds, at most `tries` times, waiting with
/// [`Backoff`] (100 ms doubling to 2 s) in between: about ten seconds for
/// eight tries. Returns whether it finally succeeded.
pub async fn with_retries<F, Fut, E>(what: &str, tries: usize, mut op: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    for _ in 0..tries {
        match op().await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying");
                backoff.wait().await;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_has_jitter_within_ten_percent_and_honours_retry_after() {
        let schedule = [Duration::from_secs(10), Duration::from_secs(100)];
        for _ in 0..200 {
            let d = retry_delay(&schedule, 2, None);
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
        assert_eq!(
            retry_delay(&schedule, 1, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        assert!(retry_delay(&schedule, 2, Some(Duration::from_secs(1))) >= Duration::from_secs(90));
        assert_eq!(
            retry_delay(&schedule, 1, Some(Duration::from_secs(10 * 86_400))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_zero_and_past_the_schedule_do_not_underflow() {
        let schedule = [Duration::from_secs(10), Duration::from_secs(100)];
        let d = retry_delay(&schedule, 0, None);
        assert!(
            d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
            "{d:?}"
        );
        let d = retry_delay(&schedule, 7, None);
        assert!(d >= Duration::from_secs(90), "{d:?}");
        assert_eq!(retry_delay(&[], 1, None), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(100));
    }
}
