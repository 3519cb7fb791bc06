//! Group commit: the writes an actor decided in one round go to the store in
//! one transaction, and the effects that waited on them run, in order, once
//! it returns. Nothing an effect says can overtake the commit it depends on.

use std::time::Instant;

use tokio::sync::mpsc;
use tracing::error;

use crate::store::{Applied, PoolRound, Store, StoreError, Write};

/// The commands of one round: waits for the first (internal ones before
/// requests), then takes whatever else is already waiting, `most` in all;
/// `None` once both channels are closed and empty.
pub(super) async fn next_round<C>(
    internal: &mut mpsc::UnboundedReceiver<C>,
    requests: &mut mpsc::Receiver<C>,
    most: usize,
) -> Option<Vec<C>> {
    let first = tokio::select! {
        biased;
        Some(command) = internal.recv() => command,
        Some(command) = requests.recv() => command,
        else => return None,
    };
    let mut commands = vec![first];
    // Let the connections that are ready hand in their commands first, so a
    // round (and its commit) takes more at once.
    tokio::task::yield_now().await;
    while commands.len() < most {
        match internal.try_recv().or_else(|_| requests.try_recv()) {
            Ok(command) => commands.push(command),
            Err(_) => break,
        }
    }
    Some(commands)
}

/// What a write's commit did, for the effect that waited on it.
pub(super) enum Outcome<'a> {
    /// The effect had no write.
    None,
    /// The write's result.
    Applied(&'a Applied),
    /// The batch's transaction failed.
    Failed,
}

impl Outcome<'_> {
    /// Whether the transaction failed.
    pub(super) fn failed(&self) -> bool {
        matches!(self, Self::Failed)
    }
}

type Effect<A> = Box<dyn FnOnce(&mut A, Outcome<'_>) + Send>;

/// What one round of an actor `A` produced: writes to commit, then effects to run.
pub(super) struct Batch<A> {
    writes: Vec<Write>,
    effects: Vec<(Option<usize>, Effect<A>)>,
}

impl<A> Default for Batch<A> {
    fn default() -> Self {
        Self { writes: Vec::new(), effects: Vec::new() }
    }
}

impl<A> Batch<A> {
    /// Runs `effect` after the commit, in order with the others.
    pub(super) fn then(&mut self, effect: impl FnOnce(&mut A, Outcome<'_>) + Send + 'static) {
        self.effects.push((None, Box::new(effect)));
    }

    /// Commits `write` with the batch and runs `effect` with its result.
    pub(super) fn write_then(&mut self, write: Write, effect: impl FnOnce(&mut A, Outcome<'_>) + Send + 'static) {
        self.writes.push(write);
        self.effects.push((Some(self.writes.len() - 1), Box::new(effect)));
    }

    /// Whether nothing was decided.
    pub(super) fn is_empty(&self) -> bool {
        self.effects.is_empty()
    }

    /// Commits the writes in one transaction, then runs the effects in order
    /// on `actor`; returns false when the transaction failed.
    pub(super) async fn commit(self, actor: &mut A, store: &dyn Store) -> bool {
        let results = if self.writes.is_empty() {
            Ok(Vec::new())
        } else {
            let started = Instant::now();
            let result = store.apply(&self.writes).await;
            metrics::histogram!("petchat_store_commit_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("petchat_store_commit_writes").record(self.writes.len() as f64);
            result
        };
        self.finish(actor, results)
    }

    /// Commits the writes in the locked transaction of a shared pool's
    /// round (freeing its lock, even with no writes), then runs the effects
    /// as [`Batch::commit`] does.
    pub(super) async fn commit_round(self, actor: &mut A, round: Box<dyn PoolRound>) -> bool {
        let started = Instant::now();
        let results = round.commit(&self.writes).await;
        metrics::histogram!("petchat_pool_round_commit_seconds").record(started.elapsed().as_secs_f64());
        self.finish(actor, results)
    }

    fn finish(self, actor: &mut A, results: Result<Vec<Applied>, StoreError>) -> bool {
        let Self { writes, effects } = self;
        if let Err(e) = &results {
            error!(error = %e, writes = writes.len(), "store commit failed");
        }
        let committed = results.is_ok();
        for (index, effect) in effects {
            let outcome = match (index, &results) {
                (None, _) => Outcome::None,
                (Some(i), Ok(results)) => results.get(i).map_or(Outcome::Failed, Outcome::Applied),
                (Some(_), Err(_)) => Outcome::Failed,
            };
            effect(actor, outcome);
        }
        committed
    }
}
