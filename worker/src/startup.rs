//! Wiring: [`Worker::build`] connects what a worker needs without taking any
//! job; [`Worker::run_until_stopped`] delivers until the shutdown future
//! completes, then finishes what is in flight and flushes the attempt log.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use anyhow::Context;
use switch_core::queue::circuit::CircuitPolicy;
use switch_core::queue::consumer::{Consumer, Tasks};
use switch_core::queue::{Entry, Queue, RedisHandle};
use switch_core::subscribers::Cache;
use switch_core::target::TargetPolicy;
use switch_core::{db, Settings};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::deliver::Deliverer;
use crate::metrics::Metrics;
use crate::recorder::Recorder;
use crate::runtime::Handler;
use crate::scheduling::Scheduler;
use crate::settle::Settler;
use crate::target::{Lookup, SystemLookup};

/// Time to finish in-flight deliveries after SIGTERM.
pub const GRACE: Duration = Duration::from_secs(30);
/// Room above the delivery timeout for a probe to come back before another goes.
const PROBE_MARGIN: Duration = Duration::from_secs(20);

pub struct Worker {
    name: String,
    concurrency: usize,
    consumer: Consumer,
    consumer_tasks: Tasks,
    handoff: mpsc::Receiver<Arc<Entry>>,
    handler: Arc<Handler>,
    background: Vec<JoinHandle<()>>,
    recorder_done: JoinHandle<()>,
    /// `/metrics` and `/health`, answering until the very end of a shutdown.
    endpoint: Option<ServerHandle>,
}

/// A consumer name unique to this process.
pub fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    )
}

impl Worker {
    /// A worker resolving target hosts with the system resolver.
    pub async fn build(settings: Settings) -> anyhow::Result<Worker> {
        Self::build_with_lookup(settings, Arc::new(SystemLookup)).await
    }

    /// A worker resolving target hosts through `lookup` (tests answer for
    /// names of their own without touching DNS).
    pub async fn build_with_lookup(
        settings: Settings,
        lookup: Arc<dyn Lookup>,
    ) -> anyhow::Result<Worker> {
        let pool = db::pool(&settings.database_url, 8);
        let redis = RedisHandle::new(&settings.redis_url, Duration::from_secs(5))?;
        let queue = Queue::with_partitions(
            &settings.namespace,
            settings.queue_partitions,
            redis.clone(),
        );
        // Jobs left by another partition count are delivered too.
        let queue = match queue.clone().with_leftovers(&settings.namespace).await {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "Redis unreachable at start: partitions of another count are not looked for");
                queue
            }
        };
        // Blocking reads get a connection of their own, so they never delay acks.
        let reader = queue.on(redis.separate(Duration::from_secs(7)));
        let metrics = Metrics::new();
        // A busy address (another worker on this host with the default
        // SWITCH_WORKER_METRICS_ADDR) leaves this worker without the endpoint
        // rather than without deliveries: it says so and runs on.
        let endpoint = match crate::metrics::serve(
            &settings.worker_metrics_addr,
            metrics.clone(),
            queue.clone(),
            pool.clone(),
        ) {
            Ok(server) => Some(server),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "running without /metrics and /health; give each worker on a host its own SWITCH_WORKER_METRICS_ADDR");
                None
            }
        };
        let cache = Arc::new(Cache::new(pool.clone()));
        if let Err(e) = cache.reload_async().await {
            tracing::warn!(error = %e, "subscribers could not be loaded yet");
        }
        let refresh = cache.spawn_refresh(settings.refresh_interval, queue.clone(), |_| {});
        let (recorder, recorder_done) = Recorder::start(pool.clone(), queue.clone());
        let name = consumer_name();
        let concurrency = settings.worker_concurrency;
        let scheduler = Scheduler::new(cache.clone(), settings.subscriber_concurrency);
        let (consumer, handoff, consumer_tasks) = Consumer::start(
            queue.clone(),
            reader,
            cache.clone(),
            name.clone(),
            concurrency,
            scheduler.clone(),
        );
        let circuit = CircuitPolicy {
            failures: settings.circuit_failures,
            cooldown_ms: settings.circuit_cooldown.as_millis() as i64,
            probe_timeout_ms: (settings.delivery_timeout + PROBE_MARGIN).as_millis() as i64,
        };
        let targets = TargetPolicy::from_settings(&settings);
        let handler = Arc::new(Handler {
            deliverer: Deliverer {
                client: crate::target::client(concurrency, targets.clone(), lookup)?,
                targets,
                settings: settings.clone(),
                cache: cache.clone(),
            },
            settler: Settler {
                consumer: consumer.clone(),
                queue: queue.clone(),
                pool,
                cache,
                recorder,
                metrics,
                scheduler: scheduler.clone(),
                circuit,
                auto_disable_after: settings.auto_disable_after,
                spans: switch_core::otlp::Spans::start(
                    settings.otlp_endpoint.as_ref(),
                    "switch-worker",
                )
                .context("SWITCH_OTLP_ENDPOINT")?,
            },
        });
        let mut background = vec![
            refresh,
            tokio::spawn(crate::archiver::run(
                queue.on(redis.separate(Duration::from_secs(7))),
                handler.settler.pool.clone(),
                name.clone(),
            )),
            tokio::spawn(scheduler.run_releases(queue.clone(), circuit)),
        ];
        if let Some(retention) = settings.message_retention {
            background.push(tokio::spawn(crate::archiver::retain(
                queue,
                handler.settler.pool.clone(),
                retention,
                name.clone(),
            )));
        }
        let endpoint_handle = endpoint.as_ref().map(|e| e.handle());
        if let Some(endpoint) = endpoint {
            background.push(tokio::spawn(async move {
                if let Err(e) = endpoint.await {
                    tracing::error!(error = %e, "worker metrics endpoint stopped");
                }
            }));
        }
        tracing::info!(consumer = %name, concurrency, namespace = %settings.namespace, "switch-worker started");
        Ok(Worker {
            name,
            concurrency,
            consumer,
            consumer_tasks,
            handoff,
            handler,
            background,
            recorder_done,
            endpoint: endpoint_handle,
        })
    }

    /// Delivers until `shutdown` completes; then takes no new job, lets those
    /// in flight finish (up to [`GRACE`]) and flushes the attempt log.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let consumer = self.consumer.clone();
        let monitor = crate::runtime::monitor(
            &self.name,
            self.handoff,
            self.handler.clone(),
            self.concurrency,
            GRACE,
        );
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: no new jobs; finishing those in flight");
            consumer.stop();
            Ok(())
        };
        if let Err(e) = monitor.run_with_signal(signal).await {
            tracing::warn!(error = %e, "worker runtime stopped with an error");
        }
        let left = self.consumer.in_flight();
        if left > 0 {
            tracing::warn!(
                left,
                "jobs not finished here stay pending and are taken over by another worker"
            );
        } else {
            tracing::info!("in-flight deliveries finished");
        }
        self.consumer_tasks.abort();
        // Stopped, not only abandoned: the address is free again once this returns.
        if let Some(endpoint) = &self.endpoint {
            endpoint.stop(true).await;
        }
        for task in &self.background {
            task.abort();
        }
        let spans = self.handler.settler.spans.clone();
        drop(self.handler);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.recorder_done).await;
        spans.shutdown().await;
        Ok(())
    }
}
