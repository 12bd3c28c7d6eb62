//! Server-Sent Events: a route whose answer is a stream of JSON snapshots.
//!
//! The server asks the events closure for the route's snapshot every
//! [`HttpLimits::event_interval`](super::HttpLimits) and sends it as one `data:` line when it
//! changed; a comment line every [`KEEPALIVE`] tells proxies and the client that the stream is
//! alive. The first message carries `retry:`, so a browser's `EventSource` reconnects on its own
//! after the daemon restarts. A snapshot marked last ends the stream with `event: end`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Bytes, Frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::EventsFn;

/// How often a quiet stream sends a comment line.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// How long a browser waits before reconnecting a dropped stream, milliseconds.
const RETRY_MS: u64 = 2000;

/// One snapshot of an event route.
#[derive(Debug, Clone, PartialEq)]
pub struct EventUpdate {
    /// Sent as the `data:` line.
    pub data: serde_json::Value,
    /// Whether the stream ends after it (a finished batch).
    pub last: bool,
}

/// A response body fed by a channel: each message is one chunk.
pub(crate) struct ChannelBody {
    chunks: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// One SSE message for `update`.
pub(crate) fn message(update: &EventUpdate) -> Bytes {
    let mut text = format!("data: {}\n\n", update.data);
    if update.last {
        text.push_str("event: end\ndata: {}\n\n");
    }
    Bytes::from(text)
}

/// Starts the stream of `path` whose first snapshot is `first`: a task asks `events` for the
/// next one every `interval` (on a blocking thread, holding one of `reads`, as every database
/// read of the server does) and sends what changed until the client goes, a snapshot is last,
/// or the route disappears; `held` (the stream's slot) is released then.
pub(crate) fn stream(
    events: EventsFn,
    path: String,
    first: EventUpdate,
    interval: Duration,
    reads: Arc<Semaphore>,
    held: OwnedSemaphorePermit,
) -> ChannelBody {
    let (sender, chunks) = mpsc::channel(4);
    tokio::spawn(async move {
        let _held = held;
        let opening = format!("retry: {RETRY_MS}\n");
        if sender.send(Bytes::from(opening)).await.is_err()
            || sender.send(message(&first)).await.is_err()
            || first.last
        {
            return;
        }
        let mut previous = first.data;
        let mut last_sent = Instant::now();
        loop {
            tokio::time::sleep(interval).await;
            if sender.is_closed() {
                return;
            }
            let Ok(slot) = Arc::clone(&reads).acquire_owned().await else {
                return;
            };
            let ask = Arc::clone(&events);
            let asked = path.clone();
            let next = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ask(&asked)))
            })
            .await;
            let Ok(Ok(Some(update))) = next else {
                return;
            };
            let chunk = if update.data != previous || update.last {
                Some(message(&update))
            } else if last_sent.elapsed() >= KEEPALIVE {
                Some(Bytes::from_static(b": keepalive\n\n"))
            } else {
                None
            };
            if let Some(chunk) = chunk {
                if sender.send(chunk).await.is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
            if update.last {
                return;
            }
            previous = update.data;
        }
    });
    ChannelBody { chunks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_one_data_line_and_the_last_adds_an_end_event() {
        let update = EventUpdate {
            data: serde_json::json!({ "done": 3 }),
            last: false,
        };
        assert_eq!(&message(&update)[..], b"data: {\"done\":3}\n\n");
        let last = EventUpdate {
            last: true,
            ..update
        };
        assert_eq!(
            &message(&last)[..],
            b"data: {\"done\":3}\n\nevent: end\ndata: {}\n\n"
        );
    }
}
