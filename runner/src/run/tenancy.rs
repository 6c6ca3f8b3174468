//! Who may run in a drain worker at a time. The task root (`/var/task`) and the layers
//! root (`/opt`) are one folder each per task, as in Lambda's sandbox, so runs at once
//! must all see the same code and layers: the runs of one function version share them
//! (as Lambda Managed Instances run several invocations in one execution environment);
//! another function waits until they are over, and then the folders are repointed.
//!
//! Fair: once another function waits, no new run of the current one is admitted, so a
//! steady stream of one function's messages cannot hold another's forever.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The worker's tenancy: which code its runs see now, and how many run.
#[derive(Default)]
pub(crate) struct Tenancy {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// The identity the running runs share, and how many they are.
    holder: Option<(String, usize)>,
    /// Runs waiting for their turn, by identity.
    waiting: BTreeMap<String, usize>,
}

impl State {
    /// Whether a run of `identity` may start now.
    fn admits(&self, identity: &str) -> bool {
        match &self.holder {
            None => true,
            Some((held, _)) => held == identity && self.waiting.keys().all(|other| other == identity),
        }
    }
}

/// A run's place: while it lives, no run of other code starts in the worker.
pub(crate) struct Tenant {
    tenancy: Arc<Tenancy>,
}

impl Tenancy {
    /// Waits until a run of code `identity` ([`crate::code::Fetched::identity`]) may
    /// start, and holds its place.
    pub(crate) async fn enter(self: &Arc<Self>, identity: &str) -> Tenant {
        let mut counted = false;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a release in between is not missed.
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                if counted {
                    uncount(&mut state.waiting, identity);
                }
                if state.admits(identity) {
                    match &mut state.holder {
                        Some((_, running)) => *running += 1,
                        None => state.holder = Some((identity.to_owned(), 1)),
                    }
                    return Tenant { tenancy: self.clone() };
                }
                *state.waiting.entry(identity.to_owned()).or_default() += 1;
                counted = true;
            }
            changed.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        let mut state = self.tenancy.lock();
        if let Some((_, running)) = &mut state.holder {
            *running -= 1;
            if *running == 0 {
                state.holder = None;
            }
        }
        drop(state);
        self.tenancy.changed.notify_waiters();
    }
}

fn uncount(waiting: &mut BTreeMap<String, usize>, identity: &str) {
    if let Some(count) = waiting.get_mut(identity) {
        *count -= 1;
        if *count == 0 {
            waiting.remove(identity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs of one code share the worker; another code's run starts only once they are
    /// over, and while it waits no new run of the first is admitted.
    #[tokio::test]
    async fn one_code_at_a_time_and_no_one_waits_forever() {
        let tenancy = Arc::new(Tenancy::default());
        let a1 = tenancy.enter("a").await;
        let a2 = tenancy.enter("a").await;
        let b = tokio::spawn({
            let tenancy = tenancy.clone();
            async move { tenancy.enter("b").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!b.is_finished(), "b waits while a runs");
        let a3 = tokio::spawn({
            let tenancy = tenancy.clone();
            async move { tenancy.enter("a").await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!a3.is_finished(), "no new run of a while b waits");
        drop(a1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!b.is_finished(), "b waits for every run of a");
        drop(a2);
        let b = tokio::time::timeout(Duration::from_secs(5), b).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!a3.is_finished(), "a waits while b runs");
        drop(b);
        let a3 = tokio::time::timeout(Duration::from_secs(5), a3).await.unwrap().unwrap();
        drop(a3);
        assert!(tenancy.lock().holder.is_none() && tenancy.lock().waiting.is_empty());
    }
}
