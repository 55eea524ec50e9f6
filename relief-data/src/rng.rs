//! Seeded randomness for shuffling, splits and augmentation draws.
//!
//! [`Mt19937`] is the Mersenne Twister exactly as numpy's legacy `RandomState(seed)` seeds and
//! uses it, so [`Mt19937::permutation`] returns the same indices as
//! `np.random.seed(seed); np.random.permutation(n)`: the authors' `get_pruning_examples`
//! picks its pruning batch that way, and we reproduce it index for index.

/// Number of 32-bit words of MT19937 state.
const N: usize = 624;
/// Twist offset.
const M: usize = 397;

/// The MT19937 generator (numpy legacy seeding and bounded integers).
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    pos: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937").field("pos", &self.pos).finish_non_exhaustive()
    }
}

impl Mt19937 {
    /// A generator seeded like `np.random.seed(seed)` (Knuth's `init_genrand`).
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        Self { state, pos: N }
    }

    /// A generator for stream `stream` of a 64-bit `seed` (e.g. one per epoch), decorrelated by
    /// SplitMix64 mixing.
    pub fn derived(seed: u64, stream: u64) -> Self {
        let mixed = splitmix64(seed ^ splitmix64(stream.wrapping_add(0x5851_f42d_4c95_7f2d)));
        Self::new((mixed ^ (mixed >> 32)) as u32)
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % N] & 0x7fff_ffff);
            let mut v = self.state[(i + M) % N] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.pos = 0;
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= N {
            self.twist();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// The next 64 random bits (two words, high first, as numpy does).
    pub fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        (hi << 32) | u64::from(self.next_u32())
    }

    /// A uniform integer in `0..=max` by masked rejection (numpy's legacy `random_interval`).
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> shift;
        }
        if max <= u64::from(u32::MAX) {
            loop {
                let v = u64::from(self.next_u32()) & mask;
                if v <= max {
                    return v;
                }
            }
        }
        loop {
            let v = self.next_u64() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u32() >> 31 == 1
    }

    /// A random permutation of `0..n`, identical to numpy's `permutation(n)` for the same seed.
    pub fn permutation(&mut self, n: usize) -> Vec<i64> {
        let mut v: Vec<i64> = (0..n as i64).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u64) as usize;
            v.swap(i, j);
        }
        v
    }
}

/// SplitMix64's output function.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_mt19937_output() {
        // The first outputs of init_genrand(5489), the reference implementation's default seed.
        let mut r = Mt19937::new(5489);
        let got: Vec<u32> = (0..3).map(|_| r.next_u32()).collect();
        assert_eq!(got, vec![3_499_211_612, 581_869_302, 3_890_346_734]);
    }

    #[test]
    fn permutation_matches_numpy() {
        // np.random.seed(0); np.random.permutation(10)
        assert_eq!(Mt19937::new(0).permutation(10), vec![2, 8, 4, 9, 1, 6, 7, 3, 0, 5]);
        // np.random.seed(42); np.random.permutation(10)
        assert_eq!(Mt19937::new(42).permutation(10), vec![8, 1, 5, 0, 7, 2, 9, 4, 3, 6]);
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = Mt19937::new(7).permutation(1000);
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<i64>>());
        assert!(Mt19937::new(7).permutation(0).is_empty());
        assert_eq!(Mt19937::new(7).permutation(1), vec![0]);
    }

    #[test]
    fn interval_stays_in_range_and_covers_it() {
        let mut r = Mt19937::new(1);
        let mut seen = [0u32; 9];
        for _ in 0..9000 {
            let v = r.interval(8);
            assert!(v <= 8);
            seen[v as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800 && c < 1200), "{seen:?}");
        assert!(r.interval(u64::from(u32::MAX) + 10) <= u64::from(u32::MAX) + 10);
    }

    #[test]
    fn derived_streams_differ_and_repeat() {
        let a: Vec<u32> = (0..4).map(|_| Mt19937::derived(3, 0).next_u32()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Mt19937::derived(3, 0).next_u32(), Mt19937::derived(3, 1).next_u32());
        assert_ne!(Mt19937::derived(3, 0).next_u32(), Mt19937::derived(4, 0).next_u32());
    }
}
