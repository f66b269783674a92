use switch_core::{telemetry, Settings};

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() {
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
    let run = tokio::spawn(switch_worker::runner::run(settings, shutdown_signal()));
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
