//! A gate that bounds how many requests of one kind run at once, in total and
//! per user, so that no user (and no crowd) can make the server hold more
//! responses than it budgets for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use petchat_protocol::UserId;

/// Counts requests in flight; [`Gate::enter`] refuses beyond the caps.
#[derive(Debug, Clone)]
pub(crate) struct Gate(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    total_cap: usize,
    per_user_cap: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_user: HashMap<UserId, usize>,
}

/// One request in flight; leaving the scope lets the next one in.
#[derive(Debug)]
pub(crate) struct Pass {
    gate: Gate,
    user: UserId,
}

impl Gate {
    /// A gate letting `total_cap` requests in at once, `per_user_cap` of one user.
    pub(crate) fn new(total_cap: usize, per_user_cap: usize) -> Self {
        Self(Arc::new(Inner {
            total_cap: total_cap.max(1),
            per_user_cap: per_user_cap.max(1),
            counts: Mutex::new(Counts::default()),
        }))
    }

    /// A pass for one request of `user`, or `None` when a cap is reached.
    pub(crate) fn enter(&self, user: &UserId) -> Option<Pass> {
        let mut counts = self.0.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = counts.per_user.get(user).copied().unwrap_or(0);
        if counts.total >= self.0.total_cap || mine >= self.0.per_user_cap {
            return None;
        }
        counts.total += 1;
        counts.per_user.insert(user.clone(), mine + 1);
        Some(Pass { gate: self.clone(), user: user.clone() })
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut counts = self.gate.0.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(mine) = counts.per_user.get_mut(&self.user) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                counts.per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::new(id).expect("valid id")
    }

    #[test]
    fn a_user_gets_at_most_its_share_and_everyone_at_most_the_total() {
        let gate = Gate::new(3, 2);
        let a1 = gate.enter(&user("a")).expect("first of a");
        let _a2 = gate.enter(&user("a")).expect("second of a");
        assert!(gate.enter(&user("a")).is_none(), "a third of a is over the per-user cap");
        let _b1 = gate.enter(&user("b")).expect("b has its own share");
        assert!(gate.enter(&user("c")).is_none(), "the total is reached");
        drop(a1);
        assert!(gate.enter(&user("c")).is_some(), "a pass that ends lets the next in");
    }
}
