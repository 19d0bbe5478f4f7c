//! The filter's one unit of time: milliseconds, always passed in, never read from a clock.

/// Milliseconds since an arbitrary epoch, supplied by the caller (any clock that only
/// moves forward in practice; the glue uses the host's wall clock).
pub type Millis = u64;
