//! The filter's one unit of time: milliseconds, always passed in, never read from a clock
//! here; and the `Clock` a callback passes, read only when the flow needs the time.

/// Milliseconds since an arbitrary epoch, supplied by the caller (any clock that only
/// moves forward in practice; the glue uses the host's wall clock).
pub type Millis = u64;

/// The time of one host callback, for the flow to read only when a decision needs it: on
/// the liveness path and most response callbacks it never does, and each read of the
/// host's clock is a call out of the VM (about as costly as the filter's own work there).
/// Tests pass a fixed `Option<Millis>`; `None` is a host that cannot say.
pub trait Clock {
    fn now(&self) -> Option<Millis>;
}

impl Clock for Option<Millis> {
    fn now(&self) -> Option<Millis> {
        *self
    }
}
