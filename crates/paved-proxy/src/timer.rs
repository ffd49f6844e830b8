//! A timer reused across a connection's waits, so that a request costs no registration with
//! tokio's timer wheel.
//!
//! A fresh `tokio::time::timeout` per request inserts an entry into the wheel on its first poll
//! and removes it when dropped, both under the driver's lock (about 1 % of the proxy's samples
//! under `cargo xtask bench proxy`). A `Sleep` that stays registered and is moved to a later
//! deadline costs one atomic store instead: the wheel keeps the earlier slot, finds the
//! deadline later when it gets there, and files the entry again without waking anyone. Waits
//! whose deadlines only move later (each request's is later than the last) therefore share one
//! timer each.

use std::future::Future;
use std::pin::Pin;

use tokio::time::{Instant, Sleep};

/// One reusable timer; armed on first use.
#[derive(Default)]
pub(crate) struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timer {
    /// Runs `fut` to completion, or gives up at `deadline` (`None`). `fut` is pinned by the
    /// caller, so that this future does not hold a second copy of it (an argument moved into a
    /// pinned local takes two slots of the state machine).
    pub(crate) async fn within<F: Future>(
        &mut self,
        deadline: Instant,
        fut: Pin<&mut F>,
    ) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = fut => Some(out),
            () = self.until(deadline) => None,
        }
    }

    /// Completes once `deadline` has passed.
    pub(crate) async fn until(&mut self, deadline: Instant) {
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        loop {
            sleep.as_mut().await;
            if Instant::now() >= deadline {
                return;
            }
            // Fired for an earlier deadline it had before.
            sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // Real time (the crate's tests run without tokio's test-util, which would also slow the
    // bench example's clock reads): only lower bounds are asserted.
    #[tokio::test]
    async fn gives_up_at_the_deadline_and_not_before() {
        let mut timer = Timer::default();
        let start = Instant::now();
        let done = timer
            .within(
                start + Duration::from_secs(60),
                std::pin::pin!(std::future::ready(7)),
            )
            .await;
        assert_eq!(done, Some(7));
        // Moved later: the earlier registration must not end the wait early.
        let later = Instant::now() + Duration::from_millis(40);
        let gave_up = timer
            .within(later, std::pin::pin!(std::future::pending::<()>()))
            .await;
        assert_eq!(gave_up, None);
        assert!(Instant::now() >= later);
        // Moved earlier than its first deadline, after having fired.
        let soon = Instant::now() + Duration::from_millis(5);
        timer.until(soon).await;
        assert!(Instant::now() >= soon);
        assert!(Instant::now() < start + Duration::from_secs(60));
    }
}
