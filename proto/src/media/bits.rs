//! A big-endian bit reader for the codec headers that are bit fields (H.264/HEVC
//! parameter sets after emulation-prevention removal, the AV1 sequence header, the VP9
//! uncompressed header). Every read is checked: running out of bits is an error, never a
//! panic.

/// The data ran out, or an Exp-Golomb code was longer than 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBits;

/// Reads bits MSB first.
#[derive(Debug)]
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn bit(&mut self) -> Result<u32, OutOfBits> {
        let byte = self.data.get(self.pos / 8).ok_or(OutOfBits)?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Ok(u32::from(b))
    }

    /// `n` ≤ 32 bits as an unsigned number.
    pub fn bits(&mut self, n: u32) -> Result<u32, OutOfBits> {
        let mut v: u64 = 0;
        for _ in 0..n.min(32) {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Ok(v as u32)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), OutOfBits> {
        if self.pos + n > self.data.len() * 8 {
            return Err(OutOfBits);
        }
        self.pos += n;
        Ok(())
    }

    /// Unsigned Exp-Golomb (`ue(v)`).
    pub fn ue(&mut self) -> Result<u32, OutOfBits> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(OutOfBits);
            }
        }
        Ok(((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)) as u32)
    }

    /// Signed Exp-Golomb (`se(v)`).
    pub fn se(&mut self) -> Result<i32, OutOfBits> {
        let k = self.ue()?;
        Ok(if k % 2 == 1 { k.div_ceil(2) as i32 } else { -((k / 2) as i32) })
    }
}

/// A NAL unit payload with the emulation-prevention bytes (`00 00 03`) removed.
pub fn rbsp(nalu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nalu.len());
    let mut zeros = 0;
    for &b in nalu {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_golomb_codes_and_stops_at_the_end() {
        let mut r = BitReader::new(&[0b1010_1100, 0b1000_0000]);
        assert_eq!(r.bits(2), Ok(2));
        assert_eq!(r.ue(), Ok(0)); // "1"
        assert_eq!(r.ue(), Ok(2)); // "011"
        assert_eq!(r.se(), Ok(2)); // "00100": k = 3
        assert!(r.bits(32).is_err());
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
    }
}
