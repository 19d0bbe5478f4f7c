//! The outage lab's building blocks: a relay that can blackhole a TCP path, a
//! latency recorder, and probers that hit an endpoint at a steady rate.

pub mod looplag;
pub mod prober;
pub mod recorder;
pub mod relay;
pub mod scenario;
