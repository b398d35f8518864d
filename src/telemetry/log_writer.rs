//! The log's writer thread: log lines gather in a bounded buffer and one
//! thread writes them out a few milliseconds at a time.
//!
//! A request's log line costs the request path one short lock and a copy.
//! The writer is woken once when lines start to gather, waits
//! [`GATHER`] for more, then writes all of them with one `write`; under
//! load it wakes a few hundred times a second, not once per request, and
//! when nothing is logged it sleeps. Lines that do not fit in the buffer
//! (stdout stalled) are dropped and counted, and the writer says how many
//! once it can write again, so a stuck log never stalls requests and never
//! grows memory past the bound.

use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// How long the writer waits, once woken, for more lines to gather.
pub(super) const GATHER: Duration = Duration::from_millis(5);

/// At most this many bytes of lines wait to be written; lines beyond are
/// dropped and counted.
pub(super) const BUFFER_BYTES: usize = 8 << 20;

/// The buffer shared by the writers of lines and the writer thread.
struct Shared {
    state: Mutex<Pending>,
    /// Signalled when the first line lands in an empty buffer, and on close.
    gathered: Condvar,
    limit: usize,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    closed: bool,
}

/// Where the log's lines go: a [`MakeWriter`] for the tracing subscriber.
#[derive(Clone)]
pub(super) struct GatheringWriter {
    shared: Arc<Shared>,
}

/// Keeps the writer thread; dropping it writes the lines still buffered and
/// ends the thread.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out`, buffering at most `limit` bytes.
pub(super) fn gathering_writer<W: Write + Send + 'static>(
    out: W,
    limit: usize,
) -> (GatheringWriter, LogGuard) {
    let shared = Arc::new(Shared {
        state: Mutex::new(Pending::default()),
        gathered: Condvar::new(),
        limit,
    });
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_out(&shared, out))
            .expect("spawn the log writer thread")
    };
    let writer = GatheringWriter {
        shared: shared.clone(),
    };
    let guard = LogGuard {
        shared,
        thread: Some(thread),
    };
    (writer, guard)
}

/// The writer thread: sleeps while nothing is buffered; once woken, lets
/// lines gather for [`GATHER`], then writes them all at once.
fn write_out<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::new();
    loop {
        let mut state = shared.state.lock();
        while state.bytes.is_empty() && !state.closed {
            shared.gathered.wait(&mut state);
        }
        if !state.closed {
            drop(state);
            std::thread::sleep(GATHER);
            state = shared.state.lock();
        }
        std::mem::swap(&mut state.bytes, &mut spare);
        let dropped = std::mem::take(&mut state.dropped);
        let closed = state.closed;
        drop(state);
        // a failed write loses these lines, as a full buffer would; the next
        // ones are tried again
        let _ = out.write_all(&spare);
        spare.clear();
        if dropped > 0 {
            let _ = writeln!(
                out,
                "switchyard: {dropped} log lines were dropped: the log's output could not keep up"
            );
        }
        let _ = out.flush();
        if closed && shared.state.lock().bytes.is_empty() {
            return;
        }
    }
}

impl<'a> MakeWriter<'a> for GatheringWriter {
    type Writer = GatheringWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Write for GatheringWriter {
    /// Buffers one formatted line (the subscriber writes each line whole).
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.state.lock();
        if state.bytes.len() + line.len() > self.shared.limit {
            state.dropped += 1;
        } else {
            let was_empty = state.bytes.is_empty();
            state.bytes.extend_from_slice(line);
            if was_empty {
                self.shared.gathered.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.gathered.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// An output that tests can read, and can stall.
    #[derive(Clone, Default)]
    struct Sink {
        written: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
        /// Writes begun, stalled or not.
        entered: Arc<AtomicUsize>,
        stall: Arc<Mutex<()>>,
    }

    impl Sink {
        /// Waits until the writer thread is inside its `n`th write.
        fn wait_entered(&self, n: usize) {
            let until = Instant::now() + Duration::from_secs(5);
            while self.entered.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < until, "the writer never wrote");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            let _wait = self.stall.lock();
            self.written.lock().extend_from_slice(bytes);
            *self.writes.lock() += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(sink: &Sink) -> String {
        String::from_utf8(sink.written.lock().clone()).unwrap()
    }

    fn wait_for(sink: &Sink, what: &str) {
        let until = Instant::now() + Duration::from_secs(5);
        while !text(sink).contains(what) {
            assert!(
                Instant::now() < until,
                "never written: {what}; got {:?}",
                text(sink)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn lines_that_arrive_together_are_written_with_one_write() {
        let sink = Sink::default();
        let stalled = sink.stall.lock();
        let (writer, _guard) = gathering_writer(sink.clone(), 1 << 20);
        writer.make_writer().write_all(b"first\n").unwrap();
        sink.wait_entered(1);
        // the writer is busy with the first line: these gather meanwhile
        for i in 0..100 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(stalled);
        wait_for(&sink, "line 99\n");
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text(&sink), format!("first\n{expected}"), "every line, in order");
        assert_eq!(*sink.writes.lock(), 2, "one write for the hundred that gathered");
    }

    #[test]
    fn lines_beyond_the_buffer_are_dropped_counted_and_reported() {
        let sink = Sink::default();
        let stalled = sink.stall.lock();
        let (writer, guard) = gathering_writer(sink.clone(), 100);
        writer.make_writer().write_all(b"first\n").unwrap();
        sink.wait_entered(1);
        // the output is stalled: the buffer fills behind the first line
        for i in 0..20 {
            writer
                .make_writer()
                .write_all(format!("line {i:02}\n").as_bytes())
                .unwrap();
        }
        drop(stalled);
        drop(guard);
        // 100 bytes hold twelve 8-byte lines; the other eight are dropped
        let kept: String = (0..12).map(|i| format!("line {i:02}\n")).collect();
        assert_eq!(
            text(&sink),
            format!(
                "first\n{kept}switchyard: 8 log lines were dropped: the log's output could not keep up\n"
            )
        );
    }

    #[test]
    fn dropping_the_guard_writes_what_is_buffered() {
        let sink = Sink::default();
        let (writer, guard) = gathering_writer(sink.clone(), 1 << 20);
        writer.make_writer().write_all(b"last words\n").unwrap();
        drop(guard);
        assert_eq!(text(&sink), "last words\n");
    }
}
