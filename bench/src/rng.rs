//! A small seeded generator (SplitMix64): the same seed writes the same bytes on every
//! machine, which is all an input generator needs; it is not for anything secret.

/// SplitMix64 (Steele, Lea and Flood, 2014): 64 bits of state, one multiply-xorshift per word.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose output is fixed by `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0). The modulo bias is below 2^-40 for the small
    /// bounds used here, far under anything a size distribution would show.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether an event of probability `p` happened.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Fills `buffer` with random bytes (incompressible content).
    pub fn fill(&mut self, buffer: &mut [u8]) {
        let mut chunks = buffer.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let word = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&word[..rest.len()]);
    }

    /// A generator for a sub-task, independent of this one's later output.
    pub fn fork(&mut self) -> SplitMix64 {
        SplitMix64::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let mut a = [0u8; 37];
        let mut b = [0u8; 37];
        SplitMix64::new(7).fill(&mut a);
        SplitMix64::new(7).fill(&mut b);
        assert_eq!(a, b);
        let mut c = [0u8; 37];
        SplitMix64::new(8).fill(&mut c);
        assert_ne!(a, c);
    }

    #[test]
    fn between_stays_in_its_bounds() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..10_000 {
            let n = rng.between(3, 9);
            assert!((3..=9).contains(&n), "{n}");
        }
        assert_eq!(rng.between(5, 5), 5);
    }
}
