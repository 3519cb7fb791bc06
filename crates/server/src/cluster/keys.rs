//! Every Redis key and channel name the link uses, made in this one place
//! (the Lua scripts get the prefixes they need as arguments).

/// Names under the configured prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    /// The sorted set of registered nodes, scored by their last beat (ms, Redis's clock).
    pub(super) fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// The hash of a node's connection counts, user to count.
    pub(super) fn node_counts(&self, node: &str) -> String {
        format!("{}{node}", self.node_counts_prefix())
    }

    pub(super) fn node_counts_prefix(&self) -> String {
        format!("{}node:", self.prefix)
    }

    /// A user's connection total across every registered node.
    pub(super) fn user_total(&self, user: &str) -> String {
        format!("{}{user}", self.user_total_prefix())
    }

    pub(super) fn user_total_prefix(&self) -> String {
        format!("{}user:", self.prefix)
    }

    /// The Redis channel of a caller's channel.
    pub(super) fn channel(&self, name: &str) -> String {
        format!("{}{name}", self.channel_prefix())
    }

    /// The caller's channel of a Redis channel, if it is one.
    pub(super) fn caller_channel<'a>(&self, redis_channel: &'a str) -> Option<&'a str> {
        redis_channel.strip_prefix(&self.prefix)?.strip_prefix("ch:")
    }

    fn channel_prefix(&self) -> String {
        format!("{}ch:", self.prefix)
    }

    /// A lease one node holds at a time ([`crate::cluster::RedisLink::lease`]).
    pub(super) fn lease(&self, name: &str) -> String {
        format!("{}lease:{name}", self.prefix)
    }

    /// An SSE ticket ([`crate::cluster::RedisLink::put_ticket`]).
    pub(super) fn ticket(&self, id: &str) -> String {
        format!("{}ticket:{id}", self.prefix)
    }

    /// The channel on which a leaving node wakes the others up to reap it.
    pub(super) fn wake_channel(&self) -> String {
        format!("{}node-left", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn every_name_is_under_the_prefix_and_caller_channels_cannot_collide_with_ours() {
        let keys = Keys::new("p:");
        let names =
            [keys.nodes(), keys.node_counts("n1"), keys.user_total("u1"), keys.channel("room"), keys.wake_channel()];
        assert_eq!(names, ["p:nodes", "p:node:n1", "p:user:u1", "p:ch:room", "p:node-left"]);
        assert_eq!(keys.caller_channel("p:ch:room"), Some("room"));
        // A caller's channel named like ours still lands apart from it.
        assert_ne!(keys.channel("node-left"), keys.wake_channel());
        assert_eq!(keys.caller_channel(&keys.wake_channel()), None);
        assert_eq!(keys.caller_channel("other:ch:room"), None);
    }
}
