//! Fan-out between nodes: pipelined `PUBLISH` from a queue, and one
//! subscription connection that says when it was lost and when it is back.
//!
//! The subscription is a plain RESP2 pub/sub connection owned by one task,
//! made again from scratch when it fails, rather than the connection
//! manager's automatic resubscription: that one replays the subscriptions in
//! a pipeline whose failures it ignores, gives up after its retries without a
//! word, and says nothing when it is back. Here `Lost` is sent when the
//! connection ends or misses a keepalive `PING`, and `Restored` only once
//! Redis has confirmed `SUBSCRIBE` for every channel wanted at that moment,
//! so a caller that catches up after `Restored` has missed nothing.
//!
//! Publishing never waits on Redis: `publish` puts the message on a bounded
//! queue that one task drains into pipelines. While that task knows Redis is
//! down, `publish` returns `false` at once and nothing is queued, so memory
//! stays bounded by `publish_queue` messages; what was queued when the
//! failure showed is dropped (and counted), since the subscribers catch up
//! from the database anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::keys::Keys;
use super::{ClusterError, LinkEvent, LinkSettings, RedisLink, within};

/// The most messages one `PUBLISH` pipeline carries.
const MAX_BATCH: usize = 256;
/// The longest wait between two attempts to reach Redis again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl RedisLink {
    /// Queues a message for every node subscribed to `channel`; `false` (and a dropped-publish metric) when the queue is full or Redis is down.
    pub fn publish(&self, channel: &str, payload: Bytes) -> bool {
        self.inner.fanout.publish(channel, payload)
    }

    /// Subscribes this node to `channel`, counting references: Redis hears `SUBSCRIBE` on the first.
    pub fn subscribe(&self, channel: &str) {
        self.inner.fanout.subscribe(channel);
    }

    /// Drops one reference to `channel`: Redis hears `UNSUBSCRIBE` with the last, and messages stop at once.
    pub fn unsubscribe(&self, channel: &str) {
        self.inner.fanout.unsubscribe(channel);
    }

    /// Resolves once Redis has confirmed every `subscribe` made before the
    /// call, so that whatever is published from then on arrives; also when
    /// the subscription was lost meanwhile (then `Restored` follows, once
    /// everything is subscribed again).
    pub fn subscribed(&self) -> impl Future<Output = ()> + Send + 'static {
        let (done, confirmed) = oneshot::channel();
        // A send fails only once the link stopped: nothing is coming then.
        let _ = self.inner.fanout.changes.send(Change::Barrier(done));
        async move {
            let _ = confirmed.await;
        }
    }
}

/// The handle's side of fan-out.
pub(super) struct Fanout {
    /// Channel names.
    keys: Keys,
    /// Messages for the publisher task, already named for Redis.
    queue: mpsc::Sender<(String, Bytes)>,
    /// Whether the publisher task last found Redis reachable.
    up: Arc<AtomicBool>,
    /// References per caller channel; shared with the subscriber task, which
    /// delivers only what is in it and resubscribes to all of it.
    channels: Arc<Mutex<HashMap<String, usize>>>,
    /// `SUBSCRIBE`/`UNSUBSCRIBE` for the subscriber task, sent under the
    /// `channels` lock so that they follow the map's changes in order.
    changes: mpsc::UnboundedSender<Change>,
}

/// A change of the subscription, by Redis channel name.
#[derive(Debug)]
enum Change {
    Subscribe(String),
    Unsubscribe(String),
    /// Answered once every change before it is confirmed.
    Barrier(oneshot::Sender<()>),
}

impl Fanout {
    /// Connects the subscription (so that `connect` fails if it cannot) and starts both tasks.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start(
        client: &redis::Client,
        conn: ConnectionManager,
        keys: Keys,
        settings: &LinkSettings,
        events: mpsc::Sender<LinkEvent>,
        wake: Arc<Notify>,
        stop: &CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Self, ClusterError> {
        let (queue, queue_rx) = mpsc::channel(settings.publish_queue);
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let channels = Arc::new(Mutex::new(HashMap::new()));
        let up = Arc::new(AtomicBool::new(true));
        let mut subscriber = Subscriber {
            client: client.clone(),
            keys: keys.clone(),
            channels: channels.clone(),
            changes: changes_rx,
            events,
            wake,
            wake_channel: keys.wake_channel(),
            timeout: settings.command_timeout,
            keepalive: settings.beat_every(),
            stop: stop.clone(),
        };
        let first = subscriber.connect().await?;
        tasks.spawn(subscriber.run(first));
        let publisher =
            Publisher { conn, queue: queue_rx, up: up.clone(), timeout: settings.command_timeout, stop: stop.clone() };
        tasks.spawn(publisher.run());
        Ok(Self { keys, queue, up, channels, changes })
    }

    fn publish(&self, channel: &str, payload: Bytes) -> bool {
        let queued =
            self.up.load(Ordering::Acquire) && self.queue.try_send((self.keys.channel(channel), payload)).is_ok();
        if !queued {
            metrics::counter!("petchat_cluster_publish_drops_total").increment(1);
        }
        queued
    }

    fn subscribe(&self, channel: &str) {
        let mut channels = lock(&self.channels);
        let references = channels.entry(channel.to_owned()).or_insert(0);
        *references += 1;
        if *references == 1 {
            // The subscriber task only goes away with the link.
            let _ = self.changes.send(Change::Subscribe(self.keys.channel(channel)));
        }
    }

    fn unsubscribe(&self, channel: &str) {
        let mut channels = lock(&self.channels);
        let Some(references) = channels.get_mut(channel) else {
            debug!(channel, "unsubscribe from a channel this node is not subscribed to");
            return;
        };
        *references -= 1;
        if *references == 0 {
            channels.remove(channel);
            let _ = self.changes.send(Change::Unsubscribe(self.keys.channel(channel)));
        }
    }
}

/// The task that owns the subscription connection.
struct Subscriber {
    /// Makes the connection again after a loss.
    client: redis::Client,
    /// Channel names.
    keys: Keys,
    /// What to be subscribed to, by caller name.
    channels: Arc<Mutex<HashMap<String, usize>>>,
    /// Changes to apply while connected.
    changes: mpsc::UnboundedReceiver<Change>,
    /// Where messages, `Lost` and `Restored` go.
    events: mpsc::Sender<LinkEvent>,
    /// Rung when a node announces that it left, so that the reap runs now.
    wake: Arc<Notify>,
    /// The Redis name of the wake-up channel, compared with every message's.
    wake_channel: String,
    /// How long one command may take.
    timeout: Duration,
    /// How often an idle subscription is checked with `PING`.
    keepalive: Duration,
    /// Ends the task.
    stop: CancellationToken,
}

type Subscription = (PubSubSink, PubSubStream);

impl Subscriber {
    async fn run(mut self, mut subscription: Subscription) {
        loop {
            let Some(why) = self.serve(&mut subscription).await else { return };
            metrics::counter!("petchat_cluster_subscription_losses_total").increment(1);
            warn!(error = %why, "redis subscription lost: messages published from now on may be missed");
            self.emit(LinkEvent::Lost).await;
            let Some(again) = self.reconnect().await else { return };
            subscription = again;
            info!("redis subscription restored");
            self.emit(LinkEvent::Restored).await;
        }
    }

    /// Delivers until the connection fails (with why) or the link stops (`None`).
    async fn serve(&mut self, (sink, stream): &mut Subscription) -> Option<String> {
        let mut keepalive = tokio::time::interval_at(Instant::now() + self.keepalive, self.keepalive);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return None,
                change = self.changes.recv() => {
                    let result = match change? {
                        Change::Subscribe(channel) => within(self.timeout, sink.subscribe(&channel)).await,
                        Change::Unsubscribe(channel) => within(self.timeout, sink.unsubscribe(&channel)).await,
                        Change::Barrier(done) => {
                            let _ = done.send(());
                            Ok(())
                        }
                    };
                    if let Err(err) = result {
                        return Some(err.to_string());
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else { return Some("connection closed".to_owned()) };
                    self.deliver(message).await;
                }
                _ = keepalive.tick() => {
                    if let Err(err) = within(self.timeout, sink.ping::<redis::Value>()).await {
                        return Some(format!("keepalive: {err}"));
                    }
                }
            }
        }
    }

    async fn deliver(&self, message: redis::Msg) {
        let redis_channel = message.get_channel_name();
        if redis_channel == self.wake_channel {
            self.wake.notify_one();
            return;
        }
        let Some(channel) = self.keys.caller_channel(redis_channel) else { return };
        // A message may still come between `unsubscribe` and Redis's confirmation.
        if !lock(&self.channels).contains_key(channel) {
            return;
        }
        let payload = Bytes::copy_from_slice(message.get_payload_bytes());
        self.emit(LinkEvent::Message { channel: channel.to_owned(), payload }).await;
    }

    /// Tries again, backing off, until subscribed to everything (or the link stops).
    async fn reconnect(&mut self) -> Option<Subscription> {
        let mut backoff = Duration::from_millis(50);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep(backoff) => {}
            }
            match self.connect().await {
                Ok(subscription) => return Some(subscription),
                Err(err) => debug!(error = %err, "redis subscription: reconnect failed"),
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// A new connection, subscribed (and confirmed) to every wanted channel and the wake-up channel.
    async fn connect(&mut self) -> Result<Subscription, ClusterError> {
        let pubsub = within(self.timeout, self.client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        let wanted: Vec<String> = {
            let channels = lock(&self.channels);
            // Changes sent so far are in the snapshot; later ones come after it.
            while self.changes.try_recv().is_ok() {}
            channels.keys().map(|channel| self.keys.channel(channel)).chain([self.wake_channel.clone()]).collect()
        };
        // Redis confirms each channel: allow for many.
        let timeout = self.timeout * (1 + u32::try_from(wanted.len() / 10_000).unwrap_or(u32::MAX / 2));
        within(timeout, sink.subscribe(&wanted)).await?;
        Ok((sink, stream))
    }

    async fn emit(&self, event: LinkEvent) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            // A dropped receiver means nobody listens any more: nothing to do.
            _ = self.events.send(event) => {}
        }
    }
}

/// The task that drains the publish queue into pipelines.
struct Publisher {
    /// The command connection.
    conn: ConnectionManager,
    /// What `publish` queued.
    queue: mpsc::Receiver<(String, Bytes)>,
    /// Lowered on a failure, raised once Redis answers again.
    up: Arc<AtomicBool>,
    /// How long one pipeline may take.
    timeout: Duration,
    /// Ends the task.
    stop: CancellationToken,
}

impl Publisher {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                received = self.queue.recv_many(&mut batch, MAX_BATCH) => if received == 0 { return },
            }
            let mut pipe = redis::pipe();
            for (channel, payload) in &batch {
                pipe.cmd("PUBLISH").arg(channel).arg(payload.as_ref()).ignore();
            }
            let count = batch.len() as u64;
            batch.clear();
            match within(self.timeout, pipe.exec_async(&mut self.conn)).await {
                Ok(()) => metrics::counter!("petchat_cluster_publishes_total").increment(count),
                Err(err) => {
                    metrics::counter!("petchat_cluster_publish_drops_total").increment(count);
                    self.up.store(false, Ordering::Release);
                    warn!(error = %err, dropped = count, "publishing to redis failed: dropping publishes until it answers");
                    if !self.recover().await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits for Redis to answer `PING`, dropping what is queued meanwhile; `false` if the link stopped first.
    async fn recover(&mut self) -> bool {
        let mut backoff = Duration::from_millis(50);
        loop {
            // Queued before `up` fell: as stale as the failed batch.
            let mut stale = 0;
            while self.queue.try_recv().is_ok() {
                stale += 1;
            }
            metrics::counter!("petchat_cluster_publish_drops_total").increment(stale);
            tokio::select! {
                () = self.stop.cancelled() => return false,
                () = tokio::time::sleep(backoff) => {}
            }
            if within(self.timeout, redis::cmd("PING").query_async::<String>(&mut self.conn)).await.is_ok() {
                self.up.store(true, Ordering::Release);
                info!("redis answers again: publishing");
                return true;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

fn lock(channels: &Mutex<HashMap<String, usize>>) -> MutexGuard<'_, HashMap<String, usize>> {
    // Every change under this lock is one insert, update or remove: a panic
    // elsewhere cannot leave it half-done.
    channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
