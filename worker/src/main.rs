#[global_allocator]
static ALLOC: switch_core::memory::Allocator = switch_core::memory::Allocator;

use clap::Parser;
use switch_core::{telemetry, Settings};

/// The delivery worker of the Switch webhook hub: takes jobs from the Redis
/// queue, delivers them to subscribers, retries and records every attempt.
///
/// Settings come from environment variables (and a `.env` file in the
/// working directory): SWITCH_DATABASE_URL, SWITCH_REDIS_URL,
/// SWITCH_WORKER_CONCURRENCY, SWITCH_WORKER_METRICS_ADDR (its /metrics and
/// /health) and the others the README lists. SIGTERM or Ctrl-C stops taking
/// jobs, finishes those in flight and exits 0.
#[derive(Parser)]
#[command(name = "switch-worker", version, max_term_width = 100)]
struct Cli {}

/// Installs the SIGTERM and Ctrl-C handlers at once (a signal arriving before
/// they exist would kill the process), and returns the future that waits for them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() {
    Cli::parse();
    switch_core::memory::no_huge_pages();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switch-worker: {e}");
            std::process::exit(2);
        }
    };
    let log = telemetry::init(settings.log_json);
    // On the runtime's own threads, not the main thread: the worker runtime
    // polls every delivery, and wake-ups across to a `block_on` thread cost a
    // futex call each.
    let shutdown = shutdown_signal();
    let run = tokio::spawn(async move {
        switch_worker::startup::Worker::build(settings)
            .await?
            .run_until_stopped(shutdown)
            .await
    });
    match run.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("switch-worker: {e:#}");
            drop(log);
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("switch-worker: {e}");
            drop(log);
            std::process::exit(1);
        }
    }
    tracing::info!("switch-worker stopped");
}
