//! The worker runtime: an apalis worker over the hub's own Redis Streams queue.
//!
//! apalis-redis is not used (it fails past about 8,000 due jobs and ignores
//! retry schedules), so the queue lives in `switch_core::queue` and reaches
//! apalis as a custom backend: the [`Consumer`](switch_core::queue::consumer::Consumer)
//! hands over the entries it starts; apalis runs [`Handler::handle`] on each
//! with the configured concurrency and catches panics, which its
//! acknowledgement hook turns into dead letters. The [`Monitor`] stops taking
//! jobs on shutdown and lets those in flight finish within the grace period.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use apalis::layers::WorkerBuilderExt;
use apalis_core::backend::custom::BackendBuilder;
use apalis_core::error::BoxDynError;
use apalis_core::monitor::Monitor;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::{ExecutionContext, Task};
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use apalis_core::worker::ext::ack::{Acknowledge, AcknowledgementExt};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use switch_core::queue::Entry;
use tokio::sync::{mpsc, Mutex};

use crate::deliver::Deliverer;
use crate::settle::Settler;

type Handoff = Arc<Mutex<mpsc::Receiver<Arc<Entry>>>>;
type Fetched = BoxStream<'static, Result<Option<Task<Arc<Entry>>>, BoxDynError>>;

/// Delivers one entry, then settles it.
pub struct Handler {
    pub deliverer: Deliverer,
    pub settler: Settler,
}

impl Handler {
    pub async fn handle(&self, entry: Arc<Entry>) {
        let attempted = self.deliverer.attempt(&entry).await;
        self.settler.settle(&entry, attempted).await;
    }
}

/// One worker, registered in a monitor that shuts it down gracefully.
pub fn monitor(
    name: &str,
    handoff: mpsc::Receiver<Arc<Entry>>,
    handler: Arc<Handler>,
    concurrency: usize,
    grace: Duration,
) -> Monitor {
    let handoff: Handoff = Arc::new(Mutex::new(handoff));
    let name = name.to_string();
    Monitor::new()
        .register(move |_restarts| {
            WorkerBuilder::new(name.clone())
                .backend(backend(handoff.clone()))
                // Outermost first: a slot is held until the entry is acknowledged,
                // and a panicking delivery reaches the hook as an error.
                .concurrency(concurrency)
                .ack_with(Crashes(handler.clone()))
                .catch_panic()
                .data(handler.clone())
                .build(deliver)
        })
        .shutdown_timeout(grace)
}

async fn deliver(entry: Arc<Entry>, handler: Data<Arc<Handler>>) -> Result<(), BoxDynError> {
    handler.handle(entry).await;
    Ok(())
}

/// Tasks are the entries the consumer starts; the task id is the stream
/// entry key (partition and id), which the hook needs to find a crashed delivery's job.
fn backend(
    handoff: Handoff,
) -> apalis_core::backend::custom::CustomBackend<
    Arc<Entry>,
    Handoff,
    Fetched,
    impl futures_util::Sink<Task<Arc<Entry>>, Error = BoxDynError> + Unpin + Send + 'static,
> {
    BackendBuilder::new()
        .database(handoff)
        .fetcher(
            |handoff: &mut Handoff, _: &(), worker: &WorkerContext| -> Fetched {
                let handoff = handoff.clone();
                let worker = worker.clone();
                stream::once(async move { handoff.lock_owned().await })
                    .flat_map(move |rx| {
                        let worker = worker.clone();
                        stream::unfold(rx, move |mut rx| {
                            let worker = worker.clone();
                            async move {
                                match rx.recv().await {
                                    Some(entry) => {
                                        let id = TaskId::String(entry.key());
                                        let task = TaskBuilder::new(entry).task_id(id).build();
                                        Some((Ok(Some(task)), rx))
                                    }
                                    None => {
                                        // The reader stopped: a worker whose stream ends
                                        // must be told to stop, or it waits forever.
                                        let _ = worker.stop();
                                        None
                                    }
                                }
                            }
                        })
                    })
                    .boxed()
            },
        )
        // Jobs are added to the stream by the server's enqueue script, never here.
        .sink(|_: &mut Handoff, _: &()| {
            futures_util::sink::drain().sink_map_err(|never| -> BoxDynError { match never {} })
        })
        .build()
        .expect("the backend has a fetcher and a sink")
}

/// The acknowledgement hook: a delivery that ended in an error (a panic
/// caught by apalis) has not settled its job; its job becomes a dead letter.
#[derive(Clone)]
struct Crashes(Arc<Handler>);

impl Acknowledge<()> for Crashes {
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<(), Infallible>>;

    fn ack(&mut self, res: &Result<(), BoxDynError>, ctx: &ExecutionContext) -> Self::Future {
        let handler = self.0.clone();
        let crashed = match (res, ctx.task_id()) {
            (Err(e), Some(id)) => Some((id.to_string(), e.to_string())),
            _ => None,
        };
        async move {
            if let Some((entry_id, error)) = crashed {
                handler.settler.crashed(&entry_id, &error).await;
            }
            Ok(())
        }
        .boxed()
    }
}
