//! livegate's proxy-wasm filter (placeholder until the filter lands).
