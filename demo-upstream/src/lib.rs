//! demo upstream (placeholder).
