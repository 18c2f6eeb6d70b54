//! Server side of the RTMP handshake (C0/C1/C2 in, S0/S1/S2 out).
//!
//! Supports the plain handshake (S2 echoes C1) and the Flash "digest" handshake: when C1
//! carries a valid HMAC-SHA256 digest (schema 0 or 1, Flash Player key), S1 carries a
//! server digest in the same schema and S2 ends with an HMAC keyed from the client digest,
//! as FMS does. C2 is consumed but not validated: real encoders send odd C2s.
//! Timeouts are the I/O edge's job.

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::RtmpError;

pub const RTMP_VERSION: u8 = 3;
pub const HANDSHAKE_SIZE: usize = 1536;
const DIGEST_LEN: usize = 32;
const BLOCK_LEN: usize = 764;

const KEY_TAIL: [u8; 32] = [
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57, 0x6E, 0xEC, 0x5D,
    0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
];
pub(crate) const FP_KEY_TEXT: &[u8] = b"Genuine Adobe Flash Player 001";
pub(crate) const FMS_KEY_TEXT: &[u8] = b"Genuine Adobe Flash Media Server 001";

/// The 68-byte FMS key: the text key followed by the 32 shared trailing bytes.
pub(crate) fn fms_full_key() -> [u8; 68] {
    let mut key = [0u8; 68];
    key[..36].copy_from_slice(FMS_KEY_TEXT);
    key[36..].copy_from_slice(&KEY_TAIL);
    key
}

/// The 62-byte Flash Player key (a client signs C2 with it).
#[cfg(test)]
pub(crate) fn fp_full_key() -> [u8; 62] {
    let mut key = [0u8; 62];
    key[..30].copy_from_slice(FP_KEY_TEXT);
    key[30..].copy_from_slice(&KEY_TAIL);
    key
}

pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Digest position inside a 1536-byte C1/S1 for schema 0 (key block first) or 1 (digest block first).
pub(crate) fn digest_pos(packet: &[u8; HANDSHAKE_SIZE], schema: u8) -> usize {
    let block = if schema == 0 { 8 + BLOCK_LEN } else { 8 };
    let sum: usize = packet[block..block + 4].iter().map(|&b| b as usize).sum();
    block + 4 + sum % (BLOCK_LEN - 4 - DIGEST_LEN)
}

/// HMAC over the packet without the 32 digest bytes at `pos`.
pub(crate) fn packet_digest(packet: &[u8; HANDSHAKE_SIZE], pos: usize, key: &[u8]) -> [u8; 32] {
    hmac_sha256(key, &[&packet[..pos], &packet[pos + DIGEST_LEN..]])
}

/// Finds a valid digest made with `key` in `packet`: returns (schema, digest).
pub(crate) fn find_digest(packet: &[u8; HANDSHAKE_SIZE], key: &[u8]) -> Option<(u8, [u8; 32])> {
    [0u8, 1].into_iter().find_map(|schema| {
        let pos = digest_pos(packet, schema);
        let expected = packet_digest(packet, pos, key);
        (packet[pos..pos + DIGEST_LEN] == expected).then_some((schema, expected))
    })
}

/// Writes a digest made with `key` into `packet` for `schema`.
pub(crate) fn sign_packet(packet: &mut [u8; HANDSHAKE_SIZE], schema: u8, key: &[u8]) {
    let pos = digest_pos(packet, schema);
    let d = packet_digest(packet, pos, key);
    packet[pos..pos + DIGEST_LEN].copy_from_slice(&d);
}

/// The HMAC that ends S2 (or C2) given the peer's digest and the full key.
pub(crate) fn response_signature(random: &[u8], peer_digest: &[u8; 32], full_key: &[u8]) -> [u8; 32] {
    let temp_key = hmac_sha256(full_key, &[peer_digest]);
    hmac_sha256(&temp_key, &[random])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    WaitC0C1,
    WaitC2,
    Done,
}

/// Server handshake state machine.
#[derive(Debug)]
pub struct ServerHandshake {
    state: State,
    /// Whether the client used the digest handshake (for logging/tests).
    digest: bool,
    /// State of the generator that fills S1/S2's random part (seeded by the caller: the
    /// core draws no OS randomness).
    rng: u64,
}

impl Default for ServerHandshake {
    fn default() -> Self {
        Self::new(0)
    }
}

impl ServerHandshake {
    /// A handshake whose random bytes come from `seed` (the I/O edge passes fresh
    /// randomness per connection; tests pass a constant and get repeatable bytes).
    pub fn new(seed: u64) -> Self {
        ServerHandshake { state: State::WaitC0C1, digest: false, rng: seed }
    }

    /// Fills `buf` from a SplitMix64 stream. The handshake's random bytes only need to
    /// differ between connections; they protect nothing.
    fn fill_random(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    pub fn used_digest(&self) -> bool {
        self.digest
    }

    /// Consumes handshake bytes from `input`. Returns S0+S1+S2 once C0+C1 are complete.
    pub fn handle_input(&mut self, input: &mut BytesMut) -> Result<Option<Bytes>, RtmpError> {
        let mut reply = None;
        if self.state == State::WaitC0C1 {
            let Some(&version) = input.first() else { return Ok(None) };
            if version != RTMP_VERSION {
                return Err(RtmpError::BadHandshakeVersion(version));
            }
            if input.len() < 1 + HANDSHAKE_SIZE {
                return Ok(None);
            }
            let c0c1 = input.split_to(1 + HANDSHAKE_SIZE);
            let mut c1 = [0u8; HANDSHAKE_SIZE];
            c1.copy_from_slice(&c0c1[1..]);
            reply = Some(self.reply(&c1));
            self.state = State::WaitC2;
        }
        if self.state == State::WaitC2 && input.len() >= HANDSHAKE_SIZE {
            let _c2 = input.split_to(HANDSHAKE_SIZE);
            self.state = State::Done;
        }
        Ok(reply)
    }

    fn reply(&mut self, c1: &[u8; HANDSHAKE_SIZE]) -> Bytes {
        let mut out = BytesMut::with_capacity(1 + 2 * HANDSHAKE_SIZE);
        out.put_u8(RTMP_VERSION);
        match find_digest(c1, FP_KEY_TEXT) {
            Some((schema, client_digest)) => {
                self.digest = true;
                let mut s1 = [0u8; HANDSHAKE_SIZE];
                self.fill_random(&mut s1[8..]);
                s1[..4].copy_from_slice(&0u32.to_be_bytes());
                s1[4..8].copy_from_slice(&[0x04, 0x05, 0x00, 0x01]); // server version, as FMS sends
                sign_packet(&mut s1, schema, FMS_KEY_TEXT);
                out.put_slice(&s1);

                let mut s2 = [0u8; HANDSHAKE_SIZE];
                self.fill_random(&mut s2);
                let split = HANDSHAKE_SIZE - DIGEST_LEN;
                let sig = response_signature(&s2[..split], &client_digest, &fms_full_key());
                s2[split..].copy_from_slice(&sig);
                out.put_slice(&s2);
            }
            None => {
                let mut s1 = [0u8; HANDSHAKE_SIZE];
                self.fill_random(&mut s1[8..]);
                out.put_slice(&s1);
                out.put_slice(c1);
            }
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain_c1() -> [u8; HANDSHAKE_SIZE] {
        let mut c1 = [0u8; HANDSHAKE_SIZE];
        for (i, b) in c1.iter_mut().enumerate().skip(8) {
            *b = (i * 7 + 3) as u8;
        }
        c1
    }

    fn digest_c1(schema: u8) -> [u8; HANDSHAKE_SIZE] {
        let mut c1 = plain_c1();
        c1[4..8].copy_from_slice(&[0x80, 0x00, 0x07, 0x02]);
        sign_packet(&mut c1, schema, FP_KEY_TEXT);
        c1
    }

    fn run(c1: &[u8; HANDSHAKE_SIZE], byte_by_byte: bool) -> (ServerHandshake, Bytes) {
        let mut hs = ServerHandshake::new(7);
        let mut wire = vec![RTMP_VERSION];
        wire.extend_from_slice(c1);
        wire.extend_from_slice(&[0xAB; HANDSHAKE_SIZE]); // C2: arbitrary, not validated
        let mut input = BytesMut::new();
        let mut reply = None;
        let chunks: Vec<&[u8]> = if byte_by_byte { wire.chunks(1).collect() } else { vec![&wire[..]] };
        for c in chunks {
            input.extend_from_slice(c);
            if let Some(r) = hs.handle_input(&mut input).unwrap() {
                assert!(reply.is_none());
                reply = Some(r);
            }
        }
        assert!(hs.is_done());
        assert!(input.is_empty());
        (hs, reply.unwrap())
    }

    #[test]
    fn plain_handshake_echoes_c1() {
        let c1 = plain_c1();
        for bb in [false, true] {
            let (hs, reply) = run(&c1, bb);
            assert!(!hs.used_digest());
            assert_eq!(reply.len(), 1 + 2 * HANDSHAKE_SIZE);
            assert_eq!(reply[0], 3);
            assert_eq!(&reply[1 + HANDSHAKE_SIZE..], &c1[..]);
        }
    }

    #[test]
    fn digest_handshake_both_schemas() {
        for schema in [0u8, 1] {
            let c1 = digest_c1(schema);
            let (found_schema, client_digest) = find_digest(&c1, FP_KEY_TEXT).unwrap();
            assert_eq!(found_schema, schema);
            let (hs, reply) = run(&c1, schema == 1);
            assert!(hs.used_digest());
            // Verify as a Flash client would.
            let mut s1 = [0u8; HANDSHAKE_SIZE];
            s1.copy_from_slice(&reply[1..1 + HANDSHAKE_SIZE]);
            let (s1_schema, _) = find_digest(&s1, FMS_KEY_TEXT).expect("S1 carries a server digest");
            assert_eq!(s1_schema, schema);
            let s2 = &reply[1 + HANDSHAKE_SIZE..];
            let split = HANDSHAKE_SIZE - DIGEST_LEN;
            let expected = response_signature(&s2[..split], &client_digest, &fms_full_key());
            assert_eq!(&s2[split..], &expected[..]);
            // The S2 signature is HMAC(HMAC(fms_full_key, c1_digest), s2_random).
            let temp = hmac_sha256(&fms_full_key(), &[&client_digest]);
            assert_eq!(&s2[split..], &hmac_sha256(&temp, &[&s2[..split]])[..]);
        }
    }

    #[test]
    fn corrupted_digest_falls_back_to_plain() {
        let mut c1 = digest_c1(0);
        let pos = digest_pos(&c1, 0);
        c1[pos] ^= 1;
        let (hs, reply) = run(&c1, false);
        assert!(!hs.used_digest());
        assert_eq!(&reply[1 + HANDSHAKE_SIZE..], &c1[..]);
    }

    #[test]
    fn bad_version_is_an_error() {
        let mut hs = ServerHandshake::new(7);
        let mut input = BytesMut::from(&[6u8][..]);
        assert_eq!(hs.handle_input(&mut input), Err(RtmpError::BadHandshakeVersion(6)));
    }

    #[test]
    fn fp_key_is_62_bytes() {
        assert_eq!(fp_full_key().len(), 62);
        assert_eq!(&fms_full_key()[..36], FMS_KEY_TEXT);
    }
}
