//! One logging setup for every binary: one line per event, JSON on request.

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{fmt, EnvFilter};

/// Starts logging to standard output. Lines are formatted where they happen
/// and written by a thread of their own, a batch per write, so a busy hub does
/// not make one system call per line; nothing is dropped (a full buffer makes
/// the caller wait). Keep the guard until exit: dropping it flushes.
#[must_use = "logs written after the guard is dropped may be lost"]
pub fn init(json: bool) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stdout().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("switch-log")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stdout()));
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
    guard
}
