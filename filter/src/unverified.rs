//! The worker's budget for request bodies held while their keys are being checked.
//!
//! A key the filter has not seen costs its body for the length of one auth check: Envoy
//! keeps reading it (up to the route's largest body) while the check is in flight. Dozens
//! of clients with keys nobody issued would make Envoy hold dozens of bodies at once, faster
//! than the overload manager (which samples the heap) can shed them. Each worker therefore
//! holds at most `max_unverified_body_bytes` of such bodies: the stream whose body would
//! take it past is answered 503 at once, and its bytes freed. One stream is always let in
//! whole, however large, so that a body bigger than the budget can still be checked.

use std::cell::Cell;

/// The worker's bytes of bodies whose keys are being checked, and their bound.
#[derive(Debug)]
pub struct UnverifiedBodies {
    max: u64,
    held: Cell<u64>,
}

/// A stream's body would take the worker past its budget: nothing was counted for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget;

impl UnverifiedBodies {
    pub fn new(max: u64) -> UnverifiedBodies {
        UnverifiedBodies {
            max,
            held: Cell::new(0),
        }
    }

    /// A stream that had `before` bytes counted now holds `now`: counted if the worker
    /// stays within its budget, or if no other stream holds anything.
    pub fn grow(&self, before: u64, now: u64) -> Result<(), OverBudget> {
        let held = self.held.get();
        let others = held.saturating_sub(before);
        let total = others.saturating_add(now);
        if total > self.max && others > 0 {
            return Err(OverBudget);
        }
        self.held.set(total);
        Ok(())
    }

    /// A stream's `bytes` are no longer held for a check (it was decided, shed or ended).
    pub fn release(&self, bytes: u64) {
        self.held.set(self.held.get().saturating_sub(bytes));
    }

    /// Bytes held now, by every stream of the worker.
    pub fn held(&self) -> u64 {
        self.held.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bodies_are_counted_until_the_budget_and_refused_beyond() {
        let bodies = UnverifiedBodies::new(100);
        assert_eq!(bodies.grow(0, 60), Ok(()));
        assert_eq!(bodies.grow(0, 30), Ok(()));
        assert_eq!(bodies.grow(0, 11), Err(OverBudget));
        assert_eq!(bodies.held(), 90, "the refused stream counted nothing");
        assert_eq!(
            bodies.grow(0, 10),
            Ok(()),
            "exactly the budget is within it"
        );
    }

    #[test]
    fn a_stream_growing_counts_only_its_growth() {
        let bodies = UnverifiedBodies::new(100);
        bodies.grow(0, 40).unwrap();
        bodies.grow(40, 90).unwrap();
        assert_eq!(bodies.held(), 90);
        bodies.release(90);
        assert_eq!(bodies.held(), 0);
    }

    #[test]
    fn one_stream_alone_may_hold_more_than_the_budget() {
        let bodies = UnverifiedBodies::new(100);
        assert_eq!(bodies.grow(0, 50), Ok(()));
        assert_eq!(
            bodies.grow(50, 500),
            Ok(()),
            "alone: it can still be checked"
        );
        assert_eq!(bodies.grow(0, 1), Err(OverBudget), "no one beside it");
        bodies.release(500);
        assert_eq!(bodies.grow(0, 1), Ok(()));
    }

    proptest! {
        /// Whatever streams grow and end, in any order, the worker holds no more than the
        /// budget, or one stream's body alone.
        #[test]
        fn the_budget_holds(steps in proptest::collection::vec((0usize..6, 0u64..80, any::<bool>()), 1..200)) {
            let bodies = UnverifiedBodies::new(100);
            let mut streams = [0u64; 6];
            for (stream, grow_by, end) in steps {
                if end {
                    bodies.release(streams[stream]);
                    streams[stream] = 0;
                } else {
                    let now = streams[stream] + grow_by;
                    match bodies.grow(streams[stream], now) {
                        Ok(()) => streams[stream] = now,
                        Err(OverBudget) => {
                            bodies.release(streams[stream]);
                            streams[stream] = 0;
                        }
                    }
                }
                let total: u64 = streams.iter().sum();
                prop_assert_eq!(bodies.held(), total);
                let largest = streams.iter().copied().max().unwrap_or(0);
                prop_assert!(total <= 100 || total == largest, "{streams:?}");
            }
        }
    }
}
