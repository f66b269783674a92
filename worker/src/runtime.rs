//! The worker runtime: an apalis worker over the hub's own Redis Streams queue.
//!
//! apalis-redis is not used (it fails past about 8,000 due jobs and ignores
//! retry schedules), so the queue lives in `switch_core::queue` and reaches
//! apalis as a custom backend: [`crate::runner`]'s reader hands stream entries
//! over a bounded channel; apalis runs [`Processor::process`] on each with the
//! configured concurrency, catches panics, and calls [`Finisher`] (its
//! acknowledgement hook) with the outcome, which acks, schedules the retry or
//! stores the dead letter. The [`Monitor`] stops taking jobs on shutdown and
//! lets those in flight finish within the grace period.

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

use crate::process::{Finish, Processor};

type Handoff = Arc<Mutex<mpsc::Receiver<Entry>>>;
type Fetched = BoxStream<'static, Result<Option<Task<Entry>>, BoxDynError>>;

/// One worker, registered in a monitor that shuts it down gracefully.
pub fn monitor(
    name: &str,
    handoff: mpsc::Receiver<Entry>,
    processor: Arc<Processor>,
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
                .ack_with(Finisher(processor.clone()))
                .catch_panic()
                .data(processor.clone())
                .build(deliver)
        })
        .shutdown_timeout(grace)
}

async fn deliver(entry: Entry, processor: Data<Arc<Processor>>) -> Result<Finish, BoxDynError> {
    Ok(processor.process(entry).await)
}

/// Tasks are the entries the reader hands over; the task id is the stream
/// entry id, which the hook acknowledges.
fn backend(
    handoff: Handoff,
) -> apalis_core::backend::custom::CustomBackend<
    Entry,
    Handoff,
    Fetched,
    impl futures_util::Sink<Task<Entry>, Error = BoxDynError> + Unpin + Send + 'static,
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
                                        let id = TaskId::String(entry.id.clone());
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

/// The acknowledgement hook: applies each delivery's [`Finish`] to its entry.
#[derive(Clone)]
struct Finisher(Arc<Processor>);

impl Acknowledge<Finish> for Finisher {
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<(), Infallible>>;

    fn ack(&mut self, res: &Result<Finish, BoxDynError>, ctx: &ExecutionContext) -> Self::Future {
        let processor = self.0.clone();
        let entry_id = ctx.task_id().map(ToString::to_string);
        let finish = match res {
            Ok(finish) => Ok(finish.clone()),
            Err(e) => Err(e.to_string()),
        };
        async move {
            let Some(entry_id) = entry_id else {
                return Ok(());
            };
            match finish {
                Ok(finish) => processor.finish(&entry_id, finish).await,
                Err(e) => {
                    // Left pending: another pass (here or elsewhere) takes it over.
                    tracing::error!(entry = %entry_id, error = %e, "delivery failed unexpectedly; the job will be taken over");
                    processor.in_flight.remove(&entry_id);
                }
            }
            Ok(())
        }
        .boxed()
    }
}
