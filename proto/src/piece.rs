//! [`Piece`]: one piece of what goes out to a viewer, written vectored with the others.
//! Media payloads are shared `Bytes` (never copied per viewer); the small headers between
//! them (an FLV tag header, an RTMP chunk header, a WebSocket frame header) are held
//! inline, so building one takes no allocation and no reference count, and no viewer keeps
//! a block of headers alive.

use std::ops::Deref;

use bytes::{Buf, BufMut, Bytes};

/// Bytes a header piece holds inline (an FLV tag header with its PreviousTagSize and codec
/// header is at most 23, an RTMP type-0 chunk header with an FLV codec header 26, a
/// WebSocket frame header 10). 30 makes a piece 40 bytes, a `Bytes` and a tag.
pub const INLINE: usize = 30;

/// A shared payload or a small header held inline. Pieces compare by their bytes.
#[derive(Clone)]
pub enum Piece {
    Shared(Bytes),
    Inline(Inline),
}

/// Up to [`INLINE`] bytes, of which `buf[start..end]` are left to send.
#[derive(Clone, Copy)]
pub struct Inline {
    start: u8,
    end: u8,
    buf: [u8; INLINE],
}

impl Inline {
    /// A piece of what `fill` writes into the room it is given: [`INLINE`] bytes as a
    /// `&mut [u8]`, which is a `BufMut` and an `io::Write` that advances as it is written
    /// (a `BufMut` write past the room panics, an `io::Write` one returns an error).
    pub fn build(fill: impl FnOnce(&mut &mut [u8])) -> Self {
        let mut buf = [0u8; INLINE];
        let mut room = &mut buf[..];
        fill(&mut room);
        let end = INLINE - room.len();
        Self { start: 0, end: end as u8, buf }
    }

    /// `bytes` held inline, if they fit.
    pub fn copy(bytes: &[u8]) -> Option<Self> {
        (bytes.len() <= INLINE).then(|| Self::build(|w| w.put_slice(bytes)))
    }
}

impl Piece {
    /// `bytes` inline when they fit, else copied into a `Bytes` of their own.
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        match Inline::copy(bytes) {
            Some(i) => Piece::Inline(i),
            None => Piece::Shared(Bytes::copy_from_slice(bytes)),
        }
    }

    /// Drops the first `n` bytes (at most the piece's length): what a partial write took.
    pub fn advance(&mut self, n: usize) {
        match self {
            Piece::Shared(b) => b.advance(n.min(b.len())),
            Piece::Inline(i) => i.start = (usize::from(i.start) + n).min(usize::from(i.end)) as u8,
        }
    }
}

impl Default for Piece {
    fn default() -> Self {
        Piece::Shared(Bytes::new())
    }
}

impl Deref for Piece {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Piece::Shared(b) => b,
            Piece::Inline(i) => &i.buf[usize::from(i.start)..usize::from(i.end)],
        }
    }
}

impl std::borrow::Borrow<[u8]> for Piece {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl PartialEq for Piece {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl Eq for Piece {}

impl From<Bytes> for Piece {
    fn from(b: Bytes) -> Self {
        Piece::Shared(b)
    }
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if matches!(self, Piece::Shared(_)) { "Shared" } else { "Inline" };
        write!(f, "{kind}({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_shared_pieces_read_and_advance_alike() {
        let shared = Piece::from(Bytes::from_static(b"payload bytes"));
        let mut inline = Piece::copy_from_slice(b"header");
        assert!(matches!(inline, Piece::Inline(_)));
        assert_eq!(&inline[..], b"header");
        inline.advance(2);
        assert_eq!(&inline[..], b"ader");
        inline.advance(100);
        assert!(inline.is_empty());
        let mut s = shared.clone();
        s.advance(8);
        assert_eq!(&s[..], b"bytes");
        assert_eq!(&shared[..], b"payload bytes");
        // too long for inline: a Bytes of its own
        let long = vec![7u8; INLINE + 1];
        let p = Piece::copy_from_slice(&long);
        assert!(matches!(p, Piece::Shared(_)));
        assert_eq!(&p[..], &long[..]);
        let p = Piece::copy_from_slice(&long[..INLINE]);
        assert!(matches!(p, Piece::Inline(_)));
        assert_eq!(&p[..], &long[..INLINE]);
        // what `build` writes, no more
        assert_eq!(&Piece::Inline(Inline::build(|w| w.put_slice(b"abc")))[..], b"abc");
        assert!(std::mem::size_of::<Piece>() <= 40);
        assert_eq!(Piece::copy_from_slice(b"ab"), Piece::from(Bytes::from_static(b"ab")), "compared by their bytes");
        assert_eq!([Piece::copy_from_slice(b"ab"), Piece::from(Bytes::from_static(b"cd"))].concat(), b"abcd");
    }
}
