//! One logging setup for every binary: one line per event, JSON on request.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{fmt, EnvFilter};

/// How long a line may wait in the buffer before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A buffer this full is written by the thread that fills it, at once.
const FLUSH_AT: usize = 256 * 1024;

/// Starts logging to standard output. Lines are formatted where they happen,
/// appended to a shared buffer, and written to standard output in batches:
/// every 50 ms by a thread of its own, or at once by the thread that fills the
/// buffer. Nothing is dropped, and no thread is woken per line (waking a thread
/// for each line cost more than formatting it when the hub is quiet). Keep the
/// guard until exit: dropping it writes what is left.
#[must_use = "logs written after the guard is dropped may be lost"]
pub fn init(json: bool) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stdout().is_terminal();
    let (writer, guard) = BatchedStdout::start();
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

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    buffer: Vec<u8>,
    closed: bool,
    /// Standard output, but for tests.
    sink: Box<dyn Write + Send>,
}

impl Shared {
    fn new(sink: Box<dyn Write + Send>) -> Self {
        Shared {
            state: Mutex::new(State {
                buffer: Vec::with_capacity(FLUSH_AT),
                closed: false,
                sink,
            }),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes `state`'s buffer out while holding its lock, so lines keep their order.
fn write_out(state: &mut State) {
    if state.buffer.is_empty() {
        return;
    }
    // Standard output gone (closed pipe): there is nowhere left to write.
    let _ = state.sink.write_all(&state.buffer);
    let _ = state.sink.flush();
    state.buffer.clear();
}

/// The writer handed to `tracing_subscriber`: appends each formatted line.
#[derive(Clone)]
pub struct BatchedStdout(Arc<Shared>);

impl BatchedStdout {
    fn start() -> (BatchedStdout, LogGuard) {
        let shared = Arc::new(Shared::new(Box::new(std::io::stdout())));
        let flusher = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("switch-log".into())
                .spawn(move || flush_loop(&shared))
                .expect("the log thread starts")
        };
        (
            BatchedStdout(shared.clone()),
            LogGuard {
                shared,
                flusher: Some(flusher),
            },
        )
    }
}

fn flush_loop(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        write_out(&mut state);
        if state.closed {
            return;
        }
        state = shared
            .wake
            .wait_timeout(state, FLUSH_EVERY)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

impl Write for BatchedStdout {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.0.lock();
        if state.closed {
            // After the guard is gone: straight through.
            state.sink.write_all(line)?;
            return Ok(line.len());
        }
        state.buffer.extend_from_slice(line);
        if state.buffer.len() >= FLUSH_AT {
            write_out(&mut state);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStdout {
    type Writer = BatchedStdout;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Writes out what is buffered and stops the log thread when dropped.
pub struct LogGuard {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(f) = self.flusher.take() {
            let _ = f.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_wait_in_order_a_full_buffer_is_written_at_once_and_nothing_is_lost() {
        let sink = Sink::default();
        let shared = Arc::new(Shared::new(Box::new(sink.clone())));
        let mut w = BatchedStdout(shared.clone());
        w.write_all(b"one\n").unwrap();
        w.write_all(b"two\n").unwrap();
        assert!(
            sink.0.lock().unwrap().is_empty(),
            "nothing written before a flush"
        );
        let big = vec![b'x'; FLUSH_AT];
        w.write_all(&big).unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), 8 + FLUSH_AT);
        assert!(sink.0.lock().unwrap().starts_with(b"one\ntwo\nxx"));
        w.write_all(b"three\n").unwrap();
        shared.lock().closed = true;
        flush_loop(&shared); // writes what is left and returns, as at exit
        w.write_all(b"late\n").unwrap();
        let all = sink.0.lock().unwrap();
        assert_eq!(all.len(), 8 + FLUSH_AT + 11);
        assert!(all.ends_with(b"xthree\nlate\n"));
    }

    #[test]
    fn the_guard_writes_what_is_buffered_when_dropped() {
        let sink = Sink::default();
        let shared = Arc::new(Shared::new(Box::new(sink.clone())));
        let flusher = {
            let shared = shared.clone();
            std::thread::spawn(move || flush_loop(&shared))
        };
        let guard = LogGuard {
            shared: shared.clone(),
            flusher: Some(flusher),
        };
        BatchedStdout(shared).write_all(b"last words\n").unwrap();
        drop(guard);
        assert_eq!(&*sink.0.lock().unwrap(), b"last words\n");
    }
}
