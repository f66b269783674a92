//! Acknowledges finished entries in batches: every entry that finishes while
//! one XACK+XDEL is on the wire goes out in the next, so Redis sees one
//! transaction per batch instead of one per delivery. A lone ack goes at once.

use switch_core::queue::Queue;
use tokio::sync::{mpsc, oneshot};

use crate::process::with_redis_retries;

/// Most entries in one XACK+XDEL.
const MAX_BATCH: usize = 512;

type Request = (String, oneshot::Sender<bool>);

#[derive(Clone)]
pub struct Acker {
    tx: mpsc::UnboundedSender<Request>,
}

impl Acker {
    /// Starts the batching task; it ends when every `Acker` is dropped.
    pub fn start(queue: Queue) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(queue, rx));
        Acker { tx }
    }

    /// Acks `entry_id`; true once Redis has it. False when Redis stayed away
    /// through the retries: the entry stays pending and is delivered again.
    pub async fn ack(&self, entry_id: &str) -> bool {
        let (done, answer) = oneshot::channel();
        if self.tx.send((entry_id.to_string(), done)).is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

async fn run(queue: Queue, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let ids: Vec<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
        let ok = with_redis_retries("ack", || queue.ack(&ids)).await;
        for (_, done) in batch.drain(..) {
            let _ = done.send(ok);
        }
    }
}
