//! Full-jitter exponential backoff (SPEC §5), with the randomness passed in.

use crate::limits::{RECONNECT_BASE_MS, RECONNECT_CAP_MS, RECONNECT_RESET_AFTER_MS};

/// Reconnect delays: attempt `n` waits a uniformly random time in
/// `0..=min(cap, base · 2ⁿ)`; a connection that stayed up long enough starts over.
#[derive(Debug, Clone)]
pub struct Backoff {
    base_ms: u64,
    cap_ms: u64,
    reset_after_ms: u64,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// The contract's policy (base 1 s, cap 30 s, reset after 30 s up), seeded.
    pub fn new(seed: u64) -> Self {
        Self::with(RECONNECT_BASE_MS, RECONNECT_CAP_MS, RECONNECT_RESET_AFTER_MS, seed)
    }

    /// A policy with other timings (tests, benchmarks).
    pub fn with(base_ms: u64, cap_ms: u64, reset_after_ms: u64, seed: u64) -> Self {
        Self { base_ms, cap_ms, reset_after_ms, attempt: 0, rng: SplitMix64(seed) }
    }

    /// The ceiling of the next delay: `min(cap, base · 2^attempt)`.
    pub fn ceiling_ms(&self) -> u64 {
        self.base_ms.saturating_mul(1u64 << self.attempt.min(32)).min(self.cap_ms)
    }

    /// The delay before the next attempt, never shorter than `at_least_ms`
    /// (a server's hint); counts the attempt.
    pub fn next_delay_ms(&mut self, at_least_ms: u64) -> u64 {
        let ceiling = self.ceiling_ms();
        self.attempt = self.attempt.saturating_add(1);
        let jittered = self.rng.next() % ceiling.saturating_add(1);
        jittered.max(at_least_ms)
    }

    /// A connection ended after being up `up_ms`: long enough, and the
    /// delays start over.
    pub fn connection_ended(&mut self, up_ms: u64) {
        if up_ms >= self.reset_after_ms {
            self.attempt = 0;
        }
    }

    /// Attempts counted since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A random `u64` from the same generator (client message ids, jitter).
    pub(crate) fn random(&mut self) -> u64 {
        self.rng.next()
    }
}

/// A small, fast, seedable generator; plenty for jitter and ids.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_doubling_ceilings_up_to_the_cap() {
        let mut backoff = Backoff::new(7);
        let ceilings: Vec<u64> = (0..8)
            .map(|_| {
                let ceiling = backoff.ceiling_ms();
                let delay = backoff.next_delay_ms(0);
                assert!(delay <= ceiling, "{delay} > {ceiling}");
                ceiling
            })
            .collect();
        assert_eq!(ceilings, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
    }

    #[test]
    fn jitter_spreads_over_the_whole_range() {
        let mut samples = Vec::new();
        for seed in 0..2_000 {
            samples.push(Backoff::new(seed).next_delay_ms(0));
        }
        let low = samples.iter().filter(|d| **d < 250).count();
        let high = samples.iter().filter(|d| **d > 750).count();
        // Uniform on 0..=1000: about a quarter each side; far from all-or-nothing.
        assert!((300..700).contains(&low) && (300..700).contains(&high), "{low} {high}");
    }

    #[test]
    fn a_server_hint_is_a_floor_and_a_long_connection_resets_the_schedule() {
        let mut backoff = Backoff::new(1);
        assert!(backoff.next_delay_ms(5_000) >= 5_000);
        backoff.next_delay_ms(0);
        assert_eq!(backoff.ceiling_ms(), 4_000);
        backoff.connection_ended(29_999);
        assert_eq!(backoff.ceiling_ms(), 4_000);
        backoff.connection_ended(30_000);
        assert_eq!(backoff.ceiling_ms(), 1_000);
    }

    #[test]
    fn an_unbounded_cap_saturates_instead_of_overflowing() {
        let mut backoff = Backoff::with(u64::MAX, u64::MAX, u64::MAX, 3);
        for _ in 0..100 {
            backoff.next_delay_ms(0);
        }
        assert_eq!(backoff.ceiling_ms(), u64::MAX);
    }
}
