//! RTMP publish: the `publish` command through the session layer's admission
//! ([`crate::session::admit_publisher`]), its refusals as `NetStream.Publish.*` statuses.

use crate::hub::{PublishError, StreamKey};
use crate::rtmp::RequestId;
use crate::session::{admit_publisher, PublishOptions, Refusal};

use super::conn::{Connection, Role};

impl<S: crate::net::writer::Halves + Send + 'static> Connection<S> {
    pub(super) async fn on_publish(&mut self, req: RequestId, stream_id: u32, app: &str, name: &str, query: &str) {
        const BAD_NAME: &str = "NetStream.Publish.BadName";
        if !matches!(self.role, Role::Idle) {
            return self.refuse(req, BAD_NAME, "this connection already publishes or plays", "bad_request");
        }
        let Some(key) = StreamKey::parse(app, name) else {
            return self.refuse_with(req, BAD_NAME, None, &Refusal::BadName);
        };
        let ctx = self.ctx.clone();
        let options = PublishOptions {
            takeover: std::time::Duration::from_millis(ctx.config.takeover_idle_ms),
            preauthorized: false,
        };
        match admit_publisher(&ctx.svc, &key, self.peer, self.proto, query, options).await {
            Ok(ingest) => {
                let can_reconnect = self.caps.caps_ex & crate::rtmp::session::CAPS_EX_RECONNECT != 0;
                ingest.stream().set_publisher_can_reconnect(can_reconnect);
                self.session.accept(req);
                // a publisher's unfinished messages no longer count against the budget of
                // connections that do not publish (its own 2 × max_message_size still holds)
                self.session.set_shared_budget(None);
                self.role = Role::Publishing { ingest: Box::new(ingest), stream_id };
            }
            Err(refusal) => {
                let code = match &refusal {
                    Refusal::Denied(_) => "NetStream.Publish.Unauthorized",
                    Refusal::Publish(PublishError::ShuttingDown | PublishError::TooManyStreams(_))
                    | Refusal::Cluster(crate::cluster::ClaimError::Unavailable(_)) => "NetStream.Publish.Rejected",
                    _ => BAD_NAME,
                };
                self.refuse_with(req, code, Some(&key), &refusal);
            }
        }
    }
}
