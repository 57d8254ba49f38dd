//! Which block the i-th I/O of a job clone touches.
//!
//! Sequential: block i modulo the block count. Random: a permutation of
//! the blocks, different on every pass, so that (like fio's random map)
//! a job that is not time_based touches every block exactly once, and a
//! time_based one touches every block once per pass. The permutation is a
//! function of i alone, so the threads of a clone share it through one
//! atomic counter, with no lock and no per-block bitmap.

/// Offsets of one job clone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offsets {
    blocks: u64,
    bs: u64,
    random: bool,
    seed: u64,
    /// log2 of the smallest power of two >= blocks.
    bits: u32,
}

impl Offsets {
    /// `blocks` (at least 1) blocks of `bs` bytes.
    pub(crate) fn new(blocks: u64, bs: u64, random: bool, seed: u64) -> Offsets {
        let blocks = blocks.max(1);
        let bits = (64 - (blocks - 1).leading_zeros()).max(1);
        Offsets {
            blocks,
            bs,
            random,
            seed,
            bits,
        }
    }

    /// Byte offset of the i-th I/O.
    pub(crate) fn at(&self, i: u64) -> u64 {
        let pass = i / self.blocks;
        let j = i % self.blocks;
        let block = if self.random {
            self.permute(j, splitmix(self.seed ^ pass))
        } else {
            j
        };
        block * self.bs
    }

    /// A bijection on 0..blocks: a bijection on 0..2^bits (xor, odd
    /// multiply and xorshift are each invertible modulo 2^bits), walked
    /// until it lands below `blocks` (cycle walking; fewer than two steps
    /// on average since 2^bits < 2 * blocks).
    fn permute(&self, j: u64, key: u64) -> u64 {
        let mut x = j;
        loop {
            x = self.mix(x, key);
            if x < self.blocks {
                return x;
            }
        }
    }

    fn mix(&self, x: u64, key: u64) -> u64 {
        let mask = if self.bits >= 64 {
            u64::MAX
        } else {
            (1u64 << self.bits) - 1
        };
        let shift = self.bits.div_ceil(2);
        let mut x = (x ^ key) & mask;
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) & mask;
        x ^= x >> shift;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9 | 1) & mask;
        x ^= x >> shift;
        x = x.wrapping_mul(0x94D0_49BB_1331_11EB) & mask;
        x ^= x >> shift;
        x.wrapping_add(key >> 32) & mask
    }
}

/// splitmix64's finalizer: spreads a seed over all bits.
pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_offsets_touch_every_block_once_per_pass() {
        for blocks in [1u64, 2, 3, 7, 64, 100, 1000, 4097] {
            let o = Offsets::new(blocks, 4096, true, 42);
            for pass in 0..2 {
                let mut seen = vec![false; blocks as usize];
                for i in 0..blocks {
                    let off = o.at(pass * blocks + i);
                    assert_eq!(off % 4096, 0);
                    let b = (off / 4096) as usize;
                    assert!(b < blocks as usize, "block {b} out of {blocks}");
                    assert!(!seen[b], "block {b} twice in pass {pass} of {blocks}");
                    seen[b] = true;
                }
            }
        }
    }

    #[test]
    fn random_offsets_are_not_sequential() {
        let o = Offsets::new(1000, 4096, true, 7);
        let in_order = (0..999).filter(|&i| o.at(i + 1) == o.at(i) + 4096).count();
        assert!(in_order < 20, "{in_order} of 999 steps were sequential");
    }

    #[test]
    fn sequential_offsets_wrap() {
        let o = Offsets::new(3, 8192, false, 0);
        let v: Vec<u64> = (0..5).map(|i| o.at(i)).collect();
        assert_eq!(v, vec![0, 8192, 16384, 0, 8192]);
    }
}
