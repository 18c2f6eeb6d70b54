//! Sockets, whatever protocol runs over them and whichever side opened them: used by the
//! edges in `server` (inbound) and can be by the relays (outbound).
//!
//! - [`listener`]: binding, backlogs, connection limits, the accept loop, the open-file
//!   limit; shared by the RTMP, RTMPS and HTTP listeners.
//! - `writer`: vectored writes of queued pieces (RTMP connections, WebSocket-FLV).

pub mod listener;
pub(crate) mod writer;
