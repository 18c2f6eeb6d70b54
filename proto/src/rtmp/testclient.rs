//! Test helpers around [`ClientSession`]: drive a `ServerSession` in memory.

use bytes::BytesMut;

use super::chunk::RawMessage;
use super::client::ClientSession;
use super::message::{self as msg, Command};
use super::{RequestId, ServerSession, SessionEvent};

/// Drains the server's output and decodes it with `client` into messages.
pub(crate) fn receive(client: &mut ClientSession, server: &mut ServerSession) -> Vec<RawMessage> {
    let mut input = BytesMut::new();
    while let Some(b) = server.poll_transmit() {
        input.extend_from_slice(&b);
    }
    assert_eq!(server.pending_transmit_bytes(), 0);
    let mut out = Vec::new();
    client.handle_input(&mut input, &mut out).expect("server output decodes");
    assert!(input.is_empty(), "the server's output is whole messages");
    out
}

/// Received commands only.
pub(crate) fn receive_commands(client: &mut ClientSession, server: &mut ServerSession) -> Vec<Command> {
    receive(client, server)
        .into_iter()
        .filter(|m| m.type_id == msg::COMMAND_AMF0)
        .map(|m| Command::parse(m.type_id, &m.payload).expect("command decodes"))
        .collect()
}

/// Feeds `pieces` one after another, accepting every publish/play request as soon as it is
/// raised (re-running `handle_input` after each decision), and returns all events.
pub(crate) fn drive<'a>(server: &mut ServerSession, pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<SessionEvent> {
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    for piece in pieces {
        input.extend_from_slice(piece);
        loop {
            server.handle_input(&mut input).expect("handle_input");
            let mut decided = false;
            while let Some(ev) = server.poll_event() {
                if let SessionEvent::PublishRequested { req, .. } | SessionEvent::PlayRequested { req, .. } = ev {
                    server.accept(req);
                    decided = true;
                }
                events.push(ev);
            }
            if !decided {
                break;
            }
        }
        // Keep output from growing across a long byte-by-byte feed.
        while server.poll_transmit().is_some() {}
    }
    events
}

pub(crate) fn request_id(ev: &SessionEvent) -> Option<RequestId> {
    match ev {
        SessionEvent::PublishRequested { req, .. } | SessionEvent::PlayRequested { req, .. } => Some(*req),
        _ => None,
    }
}

pub(crate) fn bytes_in(piece: &[u8], whole: &[u8]) -> bool {
    let (a, b) = (whole.as_ptr() as usize, piece.as_ptr() as usize);
    b >= a && b + piece.len() <= a + whole.len()
}
