//! The WAL checkpointer: copies committed pages from the SQLite write-ahead
//! log into the database file on its own thread and connection, so that the
//! writer's commits (and the acks waiting on them) do not pay for it.
//!
//! A passive checkpoint never blocks the writer. Under a write load that never
//! pauses it may not catch up with the end of the log, and only a checkpoint
//! that does lets the log start over; so the writer keeps SQLite's own
//! automatic checkpoint at [`WRITER_CHECKPOINT_PAGES`], which bounds the log's
//! size and costs little because this thread has already copied almost every
//! page.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Duration;

use tracing::{debug, warn};

/// The writer's own automatic checkpoint, in log pages (4 KiB each): the
/// bound on the log's size when the background checkpoints fall behind.
pub(super) const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

/// The pause after each background checkpoint, so that a busy server runs at
/// most a few per second, each copying many commits at once.
const PAUSE: Duration = Duration::from_millis(100);

/// A handle to the checkpoint thread; the thread ends when the handle is dropped.
#[derive(Debug)]
pub(super) struct Checkpointer {
    wake: SyncSender<()>,
}

impl Checkpointer {
    /// Starts the thread for the database at `path`.
    pub(super) fn start(path: &Path) -> std::io::Result<Self> {
        let (wake, woken) = mpsc::sync_channel(1);
        let path = path.to_owned();
        std::thread::Builder::new().name("petchat-checkpoint".into()).spawn(move || run(&path, &woken))?;
        Ok(Self { wake })
    }

    /// Tells the thread that a commit added pages to the log; cheap, never blocks.
    pub(super) fn committed(&self) {
        // Full: a wake is already pending. Disconnected: the thread is gone
        // (it logged why), and the writer's own checkpoint still bounds the log.
        let _ = self.wake.try_send(());
    }
}

fn run(path: &Path, woken: &Receiver<()>) {
    let connection = match super::sqlite::connect(Some(path)) {
        Ok(connection) => connection,
        Err(e) => return warn!(error = %e, "the checkpoint thread could not open the database"),
    };
    while woken.recv().is_ok() {
        let done = connection
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)));
        match done {
            Ok((log, copied)) => debug!(log, copied, "checkpoint"),
            Err(e) => warn!(error = %e, "a background checkpoint failed"),
        }
        std::thread::sleep(PAUSE);
    }
}
