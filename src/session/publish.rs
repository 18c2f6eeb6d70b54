//! Publish admission, whatever brings the media: auth (keys, the `on_publish` callback),
//! the stream limit, waiting for a key that is being freed, taking over a silent publisher,
//! and continuing a stream in its reconnect grace.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{Ingest, Refusal, Services};
use crate::auth::{Action, AuthRequest};
use crate::hub::{PublishError, Stream, StreamKey};

/// How long a publish waits for its key to be freed by a publisher that is leaving
/// (or that it took over) before it is refused.
pub const KEY_WAIT: Duration = Duration::from_secs(1);
/// A publisher silent this long is probably dead: a new publish on its key waits until it
/// may take over (`takeover`) instead of being refused after `KEY_WAIT`.
pub const SILENT: Duration = Duration::from_millis(500);

/// How a publish is admitted besides its key.
#[derive(Debug, Clone, Copy)]
pub struct PublishOptions {
    /// A publisher that sent nothing for this long is replaced by a new publish of its key
    /// with the same credential (`rtmp.takeover_idle_ms`); zero: never.
    pub takeover: Duration,
    /// The publish was set up by the operator (a pull from a configured origin): publish
    /// keys and the `on_publish` callback do not apply.
    pub preauthorized: bool,
}

/// Admits a publisher of `key` from `peer` (`via`: the protocol as the auth callback names
/// it; `query`: the publish URL's query string, with its key): keys and the `on_publish`
/// callback, then the key itself. A key whose publisher is leaving is waited for
/// (`KEY_WAIT`); one whose publisher has been silent for `takeover` is taken over; a
/// stream in its reconnect grace is continued by a publish with the same credential.
pub async fn admit_publisher(
    svc: &Services,
    key: &StreamKey,
    peer: SocketAddr,
    via: &str,
    query: &str,
    options: PublishOptions,
) -> Result<Ingest, Refusal> {
    let settings = svc.settings.get();
    let policy = settings.apps.get(&key.app);
    let req = AuthRequest::for_stream(Action::Publish, key, peer, via, query);
    let answer = if options.preauthorized {
        Default::default()
    } else {
        svc.auth.check_answer(&policy.auth, &req).await.map_err(Refusal::Denied)?
    };
    // the cluster directory: a key another node publishes is refused here (a pull, which
    // serves another node's stream, claims nothing)
    let cluster = svc.cluster.as_ref().filter(|_| !options.preauthorized);
    let claim = match cluster {
        Some(c) => {
            let claim = c.claim(key).await?;
            // this node may be pulling the key from its former owner: the publisher takes over
            svc.pulls.yield_to_publisher(&svc.hub, key).await;
            Some(claim)
        }
        None => None,
    };
    let takeover = options.takeover;
    // only a publish with the same credential continues the stream in its reconnect
    // grace or takes a silent publisher's place
    // (a pull, which the operator set up, holds nobody to a credential: the stream's own
    // publisher may take it over, e.g. when it comes to this node in a cluster)
    let credential = if options.preauthorized {
        crate::hub::Credential::OPEN
    } else {
        svc.auth.publish_credential(&policy.auth, query)
    };
    let mut deadline = Instant::now() + KEY_WAIT;
    let mut took_over = false;
    let published = loop {
        let released = svc.hub.key_released();
        let got = svc.hub.publish_with(key.clone(), peer, credential, policy.gop_cache.clone(), policy.reconnect_grace);
        let Err(PublishError::AlreadyPublishing(_) | PublishError::WaitingForPublisher(_)) = got else { break got };
        // when to look at the old publisher's silence again, unless the key is freed first
        let mut recheck = deadline;
        // the current publisher may be leaving (its teardown frees the key in a moment), or
        // be a dead connection the encoder is replacing (it sends nothing: take over)
        let replaceable = |old: &Arc<Stream>| old.waiting_since().is_none() && old.admits(&credential);
        if let Some(old) = svc.hub.get(key).filter(|old| !took_over && !takeover.is_zero() && replaceable(old)) {
            let idle = old.input_idle();
            let now = Instant::now();
            // the next silence that matters: SILENT (the wait is extended) or takeover
            let next = if idle < SILENT.min(takeover) { SILENT.min(takeover) } else { takeover };
            recheck = now + next.saturating_sub(idle);
            if idle >= takeover {
                warn!(stream = %key, old = %old.publisher_addr(), "taking the stream over: its publisher sent nothing for {idle:?}");
                old.kick("replaced by a new publisher after sending nothing");
                took_over = true;
                // give the old connection the full wait to let go of the key
                deadline = deadline.max(Instant::now() + KEY_WAIT);
            } else if idle >= SILENT {
                // already silent for longer than any live encoder: wait until it may be replaced
                deadline = deadline.max(Instant::now() + (takeover - idle) + Duration::from_millis(100));
            }
        }
        if Instant::now() >= deadline {
            break got;
        }
        // wait for the key to be freed (a notification, not a polling loop), or until
        // it is time to look at the old publisher's silence again
        let _ = tokio::time::timeout_at(recheck.min(deadline), released).await;
    };
    // (a refusal drops the claim's guard, which lets go of it)
    let publisher = published?;
    if let Some(claim) = claim {
        if !claim.attach(publisher.stream()) {
            warn!(stream = %key, "cluster: the key's claim was let go of while the publish was admitted; ending it");
            publisher.stream().kick_and_end("the key's cluster claim is gone");
        }
    }
    info!(stream = %key, "publishing");
    svc.metrics.publishes.inc();
    // push targets the on_publish callback answered with (a stream continued in its grace
    // keeps the ones it has)
    for url in &answer.push {
        match svc.relays.add(key, url, "callback") {
            Ok(p) => info!(stream = %key, target = %p.url, "push from the on_publish answer"),
            Err(e) => warn!(stream = %key, "on_publish answered a push that cannot start: {e}"),
        }
    }
    if answer.record && svc.recorder.status(key).is_none_or(|s| s.state != "recording") {
        match svc.recorder.start(key, "callback") {
            Ok(_) => info!(stream = %key, "recording from the on_publish answer"),
            Err(e) => warn!(stream = %key, "on_publish asked for a recording that cannot start: {e}"),
        }
    }
    let (hub, gop, grace) = (svc.hub.clone(), policy.gop_cache.clone(), policy.reconnect_grace);
    let start_track =
        Box::new(move |k: &StreamKey| hub.publish_with(k.clone(), peer, credential, gop.clone(), grace).ok());
    Ok(Ingest::new(publisher, query.to_string(), svc.metrics.clone(), start_track))
}
