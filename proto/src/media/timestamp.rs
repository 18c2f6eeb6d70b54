//! Unwraps 32-bit RTMP/FLV millisecond timestamps into a monotonic-ish 64-bit
//! timeline. Applied exactly once, at ingest.

/// Extends a wrapping 32-bit millisecond clock to 64 bits.
///
/// A step is taken as the signed 32-bit difference from the previous value,
/// so both forward wraps (0xFFFF_FFF0 → 0x10) and small backward steps (B-frame
/// audio/video interleave jitter) come out right.
#[derive(Debug, Clone, Default)]
pub struct Unwrapper {
    last: Option<(u32, i64)>,
}

impl Unwrapper {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn unwrap(&mut self, ts: u32) -> i64 {
        let out = match self.last {
            None => i64::from(ts),
            Some((prev_raw, prev)) => prev + i64::from(ts.wrapping_sub(prev_raw) as i32),
        };
        self.last = Some((ts, out));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_plain_values() {
        let mut u = Unwrapper::new();
        assert_eq!(u.unwrap(0), 0);
        assert_eq!(u.unwrap(40), 40);
        assert_eq!(u.unwrap(33), 33);
        assert_eq!(u.unwrap(1000), 1000);
    }

    #[test]
    fn crosses_the_32_bit_wrap() {
        let mut u = Unwrapper::new();
        let start = u32::MAX - 50;
        assert_eq!(u.unwrap(start), i64::from(start));
        assert_eq!(u.unwrap(u32::MAX), i64::from(u32::MAX));
        assert_eq!(u.unwrap(10), (1i64 << 32) + 10);
        // a small step back across the wrap (interleaving) goes back, not forward 2^32
        assert_eq!(u.unwrap(u32::MAX - 5), i64::from(u32::MAX) - 5);
        assert_eq!(u.unwrap(100), (1i64 << 32) + 100);
    }

    #[test]
    fn crosses_the_24_bit_extended_boundary() {
        let mut u = Unwrapper::new();
        let base = 0x00FF_FFF0u32;
        let outs: Vec<i64> = (0..5).map(|i| u.unwrap(base + i * 10)).collect();
        assert_eq!(outs, vec![0xFFFFF0, 0xFFFFFA, 0x1000004, 0x100000E, 0x1000018]);
    }
}
