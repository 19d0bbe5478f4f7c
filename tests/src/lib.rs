//! end-to-end harness (placeholder).
