//! One seeded generator for every test that needs random data (xorshift64). Runs that draw
//! from [`Rng::from_env`] print their seed; `EFA_TEST_SEED` replays a run.

/// A small, fast, seeded generator. Not for cryptography.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `EFA_TEST_SEED`, or from the clock; the seed is printed with
    /// `test`'s name so a failing run can be replayed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("EFA_TEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(1);
            (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
        });
        eprintln!("{test}: seed {seed} (replay with EFA_TEST_SEED={seed})");
        Rng::new(seed)
    }

    /// A generator with a fixed seed (0 is replaced by 1, which xorshift needs).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A generator seeded from a text, e.g. a version, so the same text gives the same data.
    pub fn from_text(text: &str) -> Rng {
        // FNV-1a of the text.
        Rng::new(text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..hi` (`lo` if the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// True with `percent` % probability.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }

    /// `n` random bytes, like compressed forms or PDFs in a real bundle.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_data() {
        assert_eq!(Rng::new(7).bytes(100), Rng::new(7).bytes(100));
        assert_ne!(Rng::from_text("1.0.0").bytes(16), Rng::from_text("1.0.1").bytes(16));
        let mut r = Rng::new(3);
        assert!((0..1000).all(|_| (5..9).contains(&r.range(5, 9))));
    }
}
