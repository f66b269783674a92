//! The live hub of one server: a single reader of the live stream in Redis
//! fans every message out to this server's stream clients through a bounded
//! broadcast channel, so a thousand clients cost one Redis read, and a client
//! that falls behind loses its place (and is closed) instead of slowing
//! anyone. While it has clients it keeps the hub-wide live flag on, so the
//! enqueue script feeds the live stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switch_core::backoff::Backoff;
use switch_core::message::Message;
use switch_core::queue::live::LIVE_FLAG_TTL;
use switch_core::queue::Queue;
use switch_core::topic::Topic;
use tokio::sync::broadcast;

/// Messages a client may be behind before it is closed as a slow consumer.
pub const CLIENT_BUFFER: usize = 4096;
const READ_BLOCK: Duration = Duration::from_millis(1000);

/// A message as sent: its API JSON (that of `GET /messages/{id}` without
/// deliveries) and its Server-Sent Event, each written once for every client.
#[derive(Debug)]
pub struct Frame {
    pub json: String,
    pub sse: bytes::Bytes,
}

impl Frame {
    pub fn new(id: &str, json: String) -> Frame {
        let sse = bytes::Bytes::from(format!("id: {id}\nevent: message\ndata: {json}\n\n"));
        Frame { json, sse }
    }
}

/// One message as every client needs it: parsed once for topic patterns and
/// filters, and framed once.
#[derive(Debug)]
pub struct LiveEvent {
    pub seq: i64,
    pub message: Message,
    pub topic: Option<Topic>,
    pub frame: Arc<Frame>,
}

pub struct LiveHub {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    clients: AtomicUsize,
    queue: Queue,
}

/// A client's place in the hub; counts it while it lives.
pub struct Watch {
    pub events: broadcast::Receiver<Arc<LiveEvent>>,
    /// Every message logged after this cursor reaches `events`.
    pub live_from: i64,
    hub: Arc<LiveHub>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.hub.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LiveHub {
    /// Starts the reader (on `reader`, a Redis connection of its own) and the
    /// flag keeper; `queue` serves the flag.
    pub fn start(queue: Queue, reader: Queue) -> Arc<LiveHub> {
        let (tx, _) = broadcast::channel(CLIENT_BUFFER);
        let hub = Arc::new(LiveHub {
            tx,
            clients: AtomicUsize::new(0),
            queue,
        });
        tokio::spawn(read(reader, hub.tx.clone()));
        tokio::spawn(keep_flag(hub.clone()));
        hub
    }

    /// Joins the hub: events from now on, and the cursor after which every
    /// logged message is sure to arrive on them.
    pub async fn watch(self: &Arc<Self>) -> redis::RedisResult<Watch> {
        // Subscribe first: anything the reader sees from here on is ours.
        let events = self.tx.subscribe();
        self.clients.fetch_add(1, Ordering::AcqRel);
        let mut watch = Watch {
            events,
            live_from: 0,
            hub: self.clone(),
        };
        // Dropped (uncounting the client) if Redis does not answer.
        watch.live_from = self.queue.live_on().await?;
        Ok(watch)
    }

    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Acquire)
    }
}

/// Keeps the live flag on while this server has clients.
async fn keep_flag(hub: Arc<LiveHub>) {
    loop {
        tokio::time::sleep(LIVE_FLAG_TTL / 3).await;
        if hub.clients() > 0 {
            if let Err(e) = hub.queue.live_on().await {
                tracing::warn!(error = %e, "could not keep the live stream on");
            }
        }
    }
}

async fn read(reader: Queue, tx: broadcast::Sender<Arc<LiveEvent>>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut last = loop {
        match reader.live_last_id().await {
            Ok(id) => break id,
            Err(e) => {
                tracing::debug!(error = %e, "live stream unavailable; retrying");
                backoff.wait().await;
            }
        }
    };
    loop {
        match reader.read_live(&last, 1000, READ_BLOCK).await {
            Ok(entries) => {
                backoff.reset();
                for entry in entries {
                    last = entry.id.clone();
                    let (Ok(row), Ok(message)) = (
                        entry.to_row(),
                        serde_json::from_str::<Message>(&entry.message_json),
                    ) else {
                        continue;
                    };
                    let json = crate::routes::messages::to_json(&row).to_string();
                    let frame = Arc::new(Frame::new(&message.id, json));
                    // No receiver is fine: nobody is watching on this server.
                    let _ = tx.send(Arc::new(LiveEvent {
                        seq: entry.seq,
                        topic: Topic::parse(&message.topic).ok(),
                        message,
                        frame,
                    }));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the live stream failed; retrying");
                backoff.wait().await;
            }
        }
    }
}
