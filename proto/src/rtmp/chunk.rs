//! RTMP chunk stream: decoding chunks into messages and encoding messages into chunks.
//!
//! The decoder is direction-agnostic (the server uses it for client input, tests use it as a
//! client for server output). It consumes chunk bodies as they arrive, so the caller's buffer
//! never holds more than a partial chunk header. Every message is copied once, into a buffer
//! of exactly its size (the only copy): no payload keeps a read buffer, or any allocation
//! larger than itself, alive. Unfinished messages across all chunk streams hold at most the
//! buffer budget (2 × the message size limit unless set lower), counted by declared length.
//! Protocol control messages (Set Chunk Size, Abort) are interpreted by the caller, which
//! calls [`ChunkDecoder::set_chunk_size`] / [`ChunkDecoder::abort`] before decoding further.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::RtmpError;
use crate::piece::{Inline, Piece, INLINE};

pub const DEFAULT_CHUNK_SIZE: u32 = 128;
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
const EXTENDED_TS: u32 = 0xFF_FFFF;
/// Chunk streams with a message in progress at once.
pub const MAX_IN_PROGRESS: usize = 64;
/// Distinct chunk stream ids a peer may use over a connection.
pub const MAX_CHUNK_STREAMS: usize = 256;

/// A byte budget shared by many decoders (e.g. every connection of a process that does
/// not publish). The decoder reserves each unfinished message's declared length before it
/// holds it and releases it when the message completes or is dropped, so the shared bound
/// holds exactly, whatever runs concurrently. Implementations are the caller's (an atomic).
pub trait SharedBudget: Send + Sync + std::fmt::Debug {
    /// Takes `bytes` from the budget, or returns false when that would pass it.
    fn try_reserve(&self, bytes: usize) -> bool;
    /// Gives back `bytes` taken with [`Self::try_reserve`].
    fn release(&self, bytes: usize);
}

/// One complete message off the chunk stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub csid: u32,
    pub type_id: u8,
    pub stream_id: u32,
    /// Absolute 32-bit timestamp (deltas accumulated with wrapping arithmetic).
    pub timestamp: u32,
    pub payload: Bytes,
}

#[derive(Debug, Default)]
struct StreamState {
    /// Absolute timestamp of the current (or last) message.
    timestamp: u32,
    /// Last timestamp field (absolute for fmt 0, delta otherwise), after extension.
    ts_field: u32,
    /// Whether the last header carried an extended timestamp.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Bytes of the current message received so far (0: none in progress).
    received: u32,
    buf: Option<BytesMut>,
}

/// Chunk stream decoder.
#[derive(Debug)]
pub struct ChunkDecoder {
    chunk_size: u32,
    max_message_size: u32,
    streams: HashMap<u32, StreamState>,
    in_progress: usize,
    /// Declared bytes of the unfinished messages (their buffers' sizes).
    buffered: usize,
    /// Most bytes unfinished messages may hold at once.
    budget: usize,
    /// The chunk whose body is being read: its chunk stream and the body bytes still to come.
    partial: Option<(u32, u32)>,
    /// Also counts `buffered` here (see [`SharedBudget`]).
    shared: Option<Arc<dyn SharedBudget>>,
}

impl Drop for ChunkDecoder {
    fn drop(&mut self) {
        if let Some(s) = &self.shared {
            s.release(self.buffered);
        }
    }
}

impl ChunkDecoder {
    /// A decoder accepting messages up to `max_message_size` bytes, with unfinished messages
    /// holding at most twice that in all (see [`Self::set_buffer_budget`]).
    pub fn new(max_message_size: u32) -> Self {
        ChunkDecoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_message_size,
            streams: HashMap::new(),
            in_progress: 0,
            buffered: 0,
            budget: 2 * max_message_size as usize,
            partial: None,
            shared: None,
        }
    }

    /// Counts the bytes of unfinished messages in `shared` too, from now on (`None`: no
    /// longer, and what is held is given back). What is held already moves to the new
    /// budget; false (and no shared budget) when it does not fit there.
    pub fn set_shared_budget(&mut self, shared: Option<Arc<dyn SharedBudget>>) -> bool {
        if let Some(old) = self.shared.take() {
            old.release(self.buffered);
        }
        match shared {
            Some(new) if new.try_reserve(self.buffered) => {
                self.shared = Some(new);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Gives back `bytes` of unfinished messages (completed, aborted or replaced).
    fn unhold(&mut self, bytes: usize) {
        self.buffered -= bytes;
        if let Some(s) = &self.shared {
            s.release(bytes);
        }
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Applies a peer's Set Chunk Size. Valid sizes are 1..=0x7FFFFFFF; memory is bounded by
    /// the message size limit and the buffer budget, not the chunk size.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), RtmpError> {
        match size {
            0 => Err(RtmpError::ChunkSizeZero),
            s if s > MAX_CHUNK_SIZE => Err(RtmpError::ChunkSizeTooLarge(s)),
            s => {
                self.chunk_size = s;
                Ok(())
            }
        }
    }

    /// Sets the most bytes that unfinished messages (across all chunk streams) of this
    /// decoder may hold at once (2 × the message size limit by default); a message that
    /// would take the total past it is an error. Applies to messages that start afterwards.
    /// A budget shared with other decoders is [`Self::set_shared_budget`].
    pub fn set_buffer_budget(&mut self, bytes: usize) {
        self.budget = bytes;
    }

    /// Bytes held by unfinished messages right now (their declared lengths: each buffer is
    /// allocated at its message's exact size).
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Abort Message: discards the partly received message on `csid`.
    pub fn abort(&mut self, csid: u32) {
        if let Some(st) = self.streams.get_mut(&csid) {
            let held = (st.received > 0).then_some(st.length as usize);
            st.received = 0;
            st.buf = None;
            if let Some(length) = held {
                self.in_progress -= 1;
                self.unhold(length);
            }
        }
    }

    /// Decodes chunks from `input` until one message completes (returned) or the input runs
    /// out (`Ok(None)`). Chunk bodies are consumed as they arrive (into the message's own
    /// buffer), so `input` never has to hold more than a partial chunk header.
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Option<RawMessage>, RtmpError> {
        loop {
            match self.decode_chunk(input)? {
                Step::NeedMore => return Ok(None),
                Step::Message(m) => return Ok(Some(m)),
                Step::Continue => {}
            }
        }
    }

    /// Copies up to `left` bytes of the current chunk body into its message; completes the
    /// message when its last byte arrived.
    fn take_body(&mut self, input: &mut BytesMut, csid: u32, left: u32) -> Step {
        let n = (left as usize).min(input.len());
        let rest = left - n as u32;
        let Some(st) = self.streams.get_mut(&csid) else {
            input.advance(n);
            self.partial = (rest > 0).then_some((csid, rest));
            return if rest > 0 { Step::NeedMore } else { Step::Continue };
        };
        if let Some(buf) = st.buf.as_mut() {
            buf.extend_from_slice(&input[..n]);
        }
        input.advance(n);
        st.received += n as u32;
        if rest > 0 {
            self.partial = Some((csid, rest));
            return Step::NeedMore;
        }
        self.partial = None;
        if st.received < st.length {
            return Step::Continue;
        }
        self.in_progress -= 1;
        st.received = 0;
        let payload = st.buf.take().unwrap_or_default().freeze();
        let message =
            RawMessage { csid, type_id: st.type_id, stream_id: st.stream_id, timestamp: st.timestamp, payload };
        let length = st.length as usize;
        self.unhold(length);
        Step::Message(message)
    }

    fn decode_chunk(&mut self, input: &mut BytesMut) -> Result<Step, RtmpError> {
        if let Some((csid, left)) = self.partial {
            if input.is_empty() {
                return Ok(Step::NeedMore);
            }
            return Ok(self.take_body(input, csid, left));
        }
        let b: &[u8] = input;
        let Some(&first) = b.first() else {
            return Ok(Step::NeedMore);
        };
        let fmt = first >> 6;
        let (csid, mut pos) = match first & 0x3F {
            0 => match b.get(1) {
                Some(&x) => (64 + x as u32, 2),
                None => return Ok(Step::NeedMore),
            },
            1 => match (b.get(1), b.get(2)) {
                (Some(&x), Some(&y)) => (64 + x as u32 + ((y as u32) << 8), 3),
                _ => return Ok(Step::NeedMore),
            },
            n => (n as u32, 1),
        };
        let header_len = [11, 7, 3, 0][fmt as usize];
        let Some(mut h) = b.get(pos..pos + header_len) else {
            return Ok(Step::NeedMore);
        };
        pos += header_len;

        if !self.streams.contains_key(&csid) {
            if fmt != 0 {
                return Err(RtmpError::MissingChunkHeader(csid, fmt));
            }
            if self.streams.len() >= MAX_CHUNK_STREAMS {
                return Err(RtmpError::TooManyChunkStreams(self.streams.len()));
            }
        }
        let prev = self.streams.get(&csid);
        let prev_received = prev.map_or(0, |p| p.received);

        // Header fields (not yet committed to the state).
        let mut ts_field = prev.map_or(0, |p| p.ts_field);
        let mut extended = prev.is_some_and(|p| p.extended);
        let mut length = prev.map_or(0, |p| p.length);
        let mut type_id = prev.map_or(0, |p| p.type_id);
        let mut stream_id = prev.map_or(0, |p| p.stream_id);
        if fmt <= 2 {
            ts_field = h.get_uint(3) as u32;
            extended = ts_field == EXTENDED_TS;
        }
        if fmt <= 1 {
            length = h.get_uint(3) as u32;
            type_id = h.get_u8();
            if length > self.max_message_size {
                return Err(RtmpError::MessageTooLarge(length));
            }
        }
        if fmt == 0 {
            stream_id = h.get_u32_le();
        }
        if extended {
            let Some(mut ext) = b.get(pos..pos + 4) else {
                return Ok(Step::NeedMore);
            };
            let value = ext.get_u32();
            if fmt == 3 && prev_received > 0 {
                // Continuation: some encoders repeat the extended timestamp here, some do not.
                // Consume it only when it matches the one of the message in progress.
                if value == ts_field {
                    pos += 4;
                }
            } else {
                ts_field = value;
                pos += 4;
            }
        }

        let new_message = fmt != 3 || prev_received == 0;
        let received = if new_message { 0 } else { prev_received };
        let remaining = length - received;
        let chunk_len = remaining.min(self.chunk_size);
        let whole_message_here = new_message && chunk_len == length && b.len() >= pos + chunk_len as usize;
        if new_message && !whole_message_here {
            // the message stays unfinished for now: it must fit the budget
            let held = self.buffered - if prev_received > 0 { prev.map_or(0, |p| p.length as usize) } else { 0 };
            if held + length as usize > self.budget {
                return Err(RtmpError::BufferBudget { held, length, budget: self.budget });
            }
            if prev_received == 0 && self.in_progress >= MAX_IN_PROGRESS {
                return Err(RtmpError::TooManyChunkStreams(self.in_progress));
            }
            if self.shared.as_ref().is_some_and(|s| !s.try_reserve(length as usize)) {
                return Err(RtmpError::SharedBudget { length });
            }
        }

        // The header is here: commit it.
        input.advance(pos);
        let st = self.streams.entry(csid).or_default();
        if new_message && prev_received > 0 {
            tracing::debug!(csid, "new message header while a message was in progress; dropping the partial one");
            self.in_progress -= 1;
            let old = st.length as usize;
            st.received = 0;
            self.unhold(old);
        }
        let st = self.streams.entry(csid).or_default();
        if new_message {
            st.timestamp = if fmt == 0 { ts_field } else { st.timestamp.wrapping_add(ts_field) };
            st.ts_field = ts_field;
            st.extended = extended;
            st.length = length;
            st.type_id = type_id;
            st.stream_id = stream_id;
            st.received = 0;
            st.buf = None;
        }
        if whole_message_here {
            // Copied out into an allocation of its own: a slice of the read buffer would keep
            // the whole buffer alive for as long as the frame is cached.
            let payload = Bytes::copy_from_slice(&input[..chunk_len as usize]);
            input.advance(chunk_len as usize);
            return Ok(Step::Message(RawMessage {
                csid,
                type_id: st.type_id,
                stream_id: st.stream_id,
                timestamp: st.timestamp,
                payload,
            }));
        }
        if new_message {
            self.in_progress += 1;
            self.buffered += length as usize;
            // exactly the declared size (within the budget): the payload pins nothing more
            st.buf = Some(BytesMut::with_capacity(length as usize));
        }
        Ok(self.take_body(input, csid, chunk_len))
    }
}

enum Step {
    NeedMore,
    Continue,
    Message(RawMessage),
}

/// One-byte type-3 basic headers for csid 0..64, so continuation headers need no allocation.
static TYPE3_HEADERS: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = 0xC0 | i as u8;
        i += 1;
    }
    t
};

fn put_basic_header(out: &mut impl BufMut, fmt: u8, csid: u32) {
    let fmt = fmt << 6;
    match csid {
        2..=63 => out.put_u8(fmt | csid as u8),
        64..=319 => {
            out.put_u8(fmt);
            out.put_u8((csid - 64) as u8);
        }
        _ => {
            let c = csid.clamp(320, 65599) - 64;
            out.put_u8(fmt | 1);
            out.put_u16_le(c as u16);
        }
    }
}

/// Writes a type-0 message header (basic header, 11 bytes, optional extended timestamp).
fn put_type0_header(out: &mut impl BufMut, csid: u32, timestamp: u32, type_id: u8, stream_id: u32, len: usize) {
    put_basic_header(out, 0, csid);
    out.put_uint(timestamp.min(EXTENDED_TS) as u64, 3);
    out.put_uint(len as u64, 3);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if timestamp >= EXTENDED_TS {
        out.put_u32(timestamp);
    }
}

/// Type-3 continuation header; repeats the extended timestamp as ffmpeg and FMS expect.
fn type3_header(csid: u32, timestamp: u32) -> Bytes {
    if timestamp < EXTENDED_TS && csid < 64 {
        return Bytes::from_static(&TYPE3_HEADERS[csid as usize..csid as usize + 1]);
    }
    let mut out = BytesMut::with_capacity(7);
    put_basic_header(&mut out, 3, csid);
    if timestamp >= EXTENDED_TS {
        out.put_u32(timestamp);
    }
    out.freeze()
}

/// Message-to-chunk encoder. Every message starts with a type-0 header (absolute timestamp),
/// continuations use type 3.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: u32,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        ChunkEncoder { chunk_size: DEFAULT_CHUNK_SIZE }
    }
}

impl ChunkEncoder {
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Call after queueing our Set Chunk Size message.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, MAX_CHUNK_SIZE);
    }

    /// Encodes a message by copying it into `out` (for small control and command messages).
    pub fn write(&self, out: &mut BytesMut, csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: &[u8]) {
        put_type0_header(out, csid, timestamp, type_id, stream_id, payload.len());
        let mut chunks = payload.chunks(self.chunk_size as usize);
        if let Some(first) = chunks.next() {
            out.put_slice(first);
        }
        for c in chunks {
            out.put_slice(&type3_header(csid, timestamp));
            out.put_slice(c);
        }
    }

    /// Encodes a message without copying the payload: `emit` receives header pieces and
    /// pieces of `payload` in wire order. The message body is `prefix` (small, copied into
    /// the header piece: e.g. an FLV tag-body header) followed by `payload` (emitted as
    /// zero-copy slices between chunk headers; with the usual chunk size, itself). Header
    /// pieces are held inline ([`Piece::Inline`]): no allocation or reference count per
    /// message.
    #[allow(clippy::too_many_arguments)]
    pub fn write_zero_copy(
        &self,
        mut emit: impl FnMut(Piece),
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        prefix: &[u8],
        payload: Bytes,
    ) {
        let size = self.chunk_size as usize;
        let total = prefix.len() + payload.len();
        // type 0 header + prefix + a type 3 header per chunk boundary inside the prefix
        let need = 18 + prefix.len() + prefix.len().saturating_sub(1) / size.max(1) * 7;
        let mut written = 0;
        let start = |out: &mut dyn BufMut, written: &mut usize| {
            let mut out = out;
            put_type0_header(&mut out, csid, timestamp, type_id, stream_id, total);
            // the prefix is tiny compared to any sane chunk size; split it like payload anyway
            let mut prefix_left = prefix;
            while !prefix_left.is_empty() {
                if *written > 0 && (*written).is_multiple_of(size) {
                    out.put_slice(&type3_header(csid, timestamp));
                }
                let room = size - *written % size;
                let n = room.min(prefix_left.len());
                out.put_slice(&prefix_left[..n]);
                prefix_left = &prefix_left[n..];
                *written += n;
            }
        };
        if need <= INLINE {
            emit(Piece::Inline(Inline::build(|w| start(w, &mut written))));
        } else {
            let mut hdr = BytesMut::with_capacity(need);
            start(&mut hdr, &mut written);
            emit(Piece::Shared(hdr.freeze()));
        }
        // the last piece (with the usual chunk size the only one) is the payload itself,
        // moved: no reference count taken or dropped
        let mut rest = payload;
        while !rest.is_empty() {
            if written > 0 && written % size == 0 {
                emit(Piece::Shared(type3_header(csid, timestamp)));
            }
            let room = size - written % size;
            let piece = if rest.len() <= room { std::mem::take(&mut rest) } else { rest.split_to(room) };
            written += piece.len();
            emit(Piece::Shared(piece));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_forms_round_trip() {
        for csid in [2u32, 63, 64, 319, 320, 65599] {
            let enc = ChunkEncoder::default();
            let mut out = BytesMut::new();
            enc.write(&mut out, csid, 5, 20, 1, b"hello");
            let mut dec = ChunkDecoder::new(1 << 20);
            let m = dec.decode(&mut out).unwrap().unwrap();
            assert_eq!((m.csid, m.timestamp, m.type_id, m.stream_id), (csid, 5, 20, 1));
            assert_eq!(&m.payload[..], b"hello");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn chunk_size_limits() {
        let mut dec = ChunkDecoder::new(1 << 20);
        assert_eq!(dec.set_chunk_size(0), Err(RtmpError::ChunkSizeZero));
        assert_eq!(dec.set_chunk_size(0x8000_0000), Err(RtmpError::ChunkSizeTooLarge(0x8000_0000)));
        assert_eq!(dec.set_chunk_size(0x7FFF_FFFF), Ok(()));
        assert_eq!(dec.set_chunk_size(1), Ok(()));
    }

    #[test]
    fn payloads_never_point_into_the_read_buffer() {
        // a 20-byte frame after a large message must not keep the read buffer alive
        let mut enc = ChunkEncoder::default();
        enc.set_chunk_size(1 << 20);
        let mut out = BytesMut::new();
        enc.write(&mut out, 4, 0, 8, 1, &[7u8; 20]);
        enc.write(&mut out, 5, 0, 9, 1, &vec![1u8; 300_000]);
        enc.write(&mut out, 4, 10, 8, 1, &[8u8; 20]);
        let (base, end) = (out.as_ptr() as usize, out.as_ptr() as usize + out.len());
        let mut dec = ChunkDecoder::new(1 << 20);
        dec.set_chunk_size(1 << 20).unwrap();
        let mut got = Vec::new();
        while let Some(m) = dec.decode(&mut out).unwrap() {
            got.push(m);
        }
        assert_eq!(got.iter().map(|m| m.payload.len()).collect::<Vec<_>>(), vec![20, 300_000, 20]);
        for m in &got {
            let p = m.payload.as_ptr() as usize;
            assert!(p + m.payload.len() <= base || p >= end, "payload is a slice of the input");
        }
    }

    #[test]
    fn chunk_bodies_are_consumed_as_they_arrive() {
        // one 200 KB message in a single chunk, fed 1,000 bytes at a time: the input never
        // holds more than the header, the message is whole at the end
        let mut enc = ChunkEncoder::default();
        enc.set_chunk_size(1 << 20);
        let mut wire = BytesMut::new();
        let body: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        enc.write(&mut wire, 6, 3, 9, 1, &body);
        let mut dec = ChunkDecoder::new(1 << 20);
        dec.set_chunk_size(1 << 20).unwrap();
        let mut input = BytesMut::new();
        let mut got = None;
        for piece in wire.chunks(1000) {
            input.extend_from_slice(piece);
            if let Some(m) = dec.decode(&mut input).unwrap() {
                got = Some(m);
            }
            assert!(input.len() < 16, "input kept {} bytes", input.len());
        }
        let m = got.expect("message complete");
        assert_eq!((m.timestamp, m.type_id, &m.payload[..]), (3, 9, &body[..]));
        assert_eq!(dec.buffered_bytes(), 0);
    }

    #[test]
    fn unfinished_messages_are_bounded_by_the_budget_across_chunk_streams() {
        // each chunk stream starts a message near the size limit and sends one chunk of it
        let max = 1 << 20;
        let enc = ChunkEncoder::default();
        let mut dec = ChunkDecoder::new(max);
        let mut result = Ok(None);
        let mut started = 0;
        for csid in 3..40u32 {
            let mut out = BytesMut::new();
            put_type0_header(&mut out, csid, 0, 9, 1, max as usize);
            out.extend_from_slice(&[0u8; 128]);
            result = dec.decode(&mut out);
            if result.is_err() {
                break;
            }
            started += 1;
            assert!(dec.buffered_bytes() <= 2 * max as usize);
        }
        let _ = enc;
        assert_eq!(started, 2, "two unfinished messages of the maximum size fit the default budget");
        assert!(matches!(result, Err(RtmpError::BufferBudget { .. })), "{result:?}");
        // a lower budget (process-wide share) applies to the next message
        let mut dec = ChunkDecoder::new(max);
        dec.set_buffer_budget(1000);
        let mut out = BytesMut::new();
        put_type0_header(&mut out, 3, 0, 9, 1, 5000);
        out.extend_from_slice(&[0u8; 128]);
        assert!(matches!(dec.decode(&mut out), Err(RtmpError::BufferBudget { held: 0, length: 5000, budget: 1000 })));
        // messages that arrive whole are not held, whatever the budget
        let mut out = BytesMut::new();
        ChunkEncoder::default().write(&mut out, 3, 0, 8, 1, &[1u8; 100]);
        assert_eq!(dec.decode(&mut out).unwrap().unwrap().payload.len(), 100);
    }

    #[derive(Debug, Default)]
    struct Shared(std::sync::atomic::AtomicUsize, usize);

    impl SharedBudget for Shared {
        fn try_reserve(&self, bytes: usize) -> bool {
            use std::sync::atomic::Ordering::SeqCst;
            self.0.try_update(SeqCst, SeqCst, |u| Some(u + bytes).filter(|&n| n <= self.1)).is_ok()
        }
        fn release(&self, bytes: usize) {
            self.0.fetch_sub(bytes, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_shared_budget_is_reserved_message_by_message_and_given_back() {
        let shared = Arc::new(Shared(Default::default(), 150_000));
        let start = |dec: &mut ChunkDecoder, csid: u32, len: usize| {
            let mut out = BytesMut::new();
            put_type0_header(&mut out, csid, 0, 9, 1, len);
            out.extend_from_slice(&[0u8; 128]);
            dec.decode(&mut out)
        };
        let mut a = ChunkDecoder::new(1 << 20);
        let mut b = ChunkDecoder::new(1 << 20);
        assert!(a.set_shared_budget(Some(shared.clone())));
        assert!(b.set_shared_budget(Some(shared.clone())));
        assert_eq!(start(&mut a, 3, 100_000), Ok(None));
        assert_eq!(shared.0.load(std::sync::atomic::Ordering::SeqCst), 100_000);
        // the other decoder's message would pass the shared 150,000
        assert_eq!(start(&mut b, 3, 60_000), Err(RtmpError::SharedBudget { length: 60_000 }));
        // aborting gives it back, so it fits now
        a.abort(3);
        assert_eq!(shared.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(start(&mut b, 4, 60_000), Ok(None));
        // leaving the shared budget (a publisher) and dropping give back what is held
        assert!(b.set_shared_budget(None));
        assert_eq!(shared.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(start(&mut a, 5, 100_000), Ok(None));
        drop(a);
        assert_eq!(shared.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn abort_discards_partial_message() {
        let enc = ChunkEncoder::default();
        let mut out = BytesMut::new();
        enc.write(&mut out, 4, 0, 8, 1, &[1u8; 300]);
        out.truncate(12 + 128);
        let mut dec = ChunkDecoder::new(1 << 20);
        assert_eq!(dec.decode(&mut out).unwrap(), None);
        assert!(out.is_empty());
        dec.abort(4);
        enc.write(&mut out, 4, 9, 8, 1, &[2u8; 10]);
        let m = dec.decode(&mut out).unwrap().unwrap();
        assert_eq!((m.timestamp, &m.payload[..]), (9, &[2u8; 10][..]));
    }

    #[test]
    fn continuation_without_header_is_an_error() {
        let mut dec = ChunkDecoder::new(1 << 20);
        let mut input = BytesMut::from(&[0xC4u8, 1, 2, 3][..]);
        assert_eq!(dec.decode(&mut input), Err(RtmpError::MissingChunkHeader(4, 3)));
    }

    #[test]
    fn too_many_in_progress_streams_is_an_error() {
        let enc = ChunkEncoder::default();
        let mut dec = ChunkDecoder::new(1 << 20);
        let mut result = Ok(None);
        for csid in 3..(3 + MAX_IN_PROGRESS as u32 + 1) {
            let mut out = BytesMut::new();
            enc.write(&mut out, csid, 0, 8, 1, &[0u8; 200]);
            let basic = if csid < 64 { 1 } else { 2 };
            out.truncate(basic + 11 + 128); // first chunk only
            result = dec.decode(&mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(RtmpError::TooManyChunkStreams(MAX_IN_PROGRESS)));
    }
}
