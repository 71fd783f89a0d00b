//! Stateless seeded hashing: every simulated number is a pure function of its coordinates, so any
//! (code, day) is computed directly and comes out identical in every run and process.

/// SplitMix64's finaliser: a cheap bijection with good avalanche.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash of several coordinates (order matters).
pub fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5EED, |h, &p| splitmix64(h ^ p))
}

/// A seed for a string (FNV-1a, then mixed).
pub fn of_str(s: &str) -> u64 {
    splitmix64(s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)))
}

/// Uniform in `[0, 1)`.
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform in `[-1, 1)`.
pub fn signed(h: u64) -> f64 {
    unit(h) * 2.0 - 1.0
}

/// Uniform in `[lo, hi)`.
pub fn between(h: u64, lo: f64, hi: f64) -> f64 {
    lo + unit(h) * (hi - lo)
}

/// Log-uniform in `[lo, hi)`: for quantities spread over orders of magnitude (prices, share counts).
pub fn log_between(h: u64, lo: f64, hi: f64) -> f64 {
    between(h, lo.ln(), hi.ln()).exp()
}

/// An element of `items` picked with probability proportional to its weight.
pub fn weighted<T>(h: u64, items: &[(T, u32)]) -> &T {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut ticket = (unit(h) * f64::from(total)) as u32;
    for (item, w) in items {
        if ticket < *w {
            return item;
        }
        ticket -= w;
    }
    &items[items.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hold_and_values_spread() {
        let xs: Vec<f64> = (0..10_000).map(|i| unit(mix(&[7, i]))).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert_ne!(mix(&[1, 2]), mix(&[2, 1]));
        assert_eq!(of_str("600519.SH"), of_str("600519.SH"));
    }

    #[test]
    fn weighted_respects_weights() {
        let items = [("a", 1), ("b", 3)];
        let bs = (0..4000).filter(|&i| *weighted(mix(&[i]), &items) == "b").count();
        assert!((2800..3200).contains(&bs), "{bs}");
    }
}
