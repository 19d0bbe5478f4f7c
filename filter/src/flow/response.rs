//! The response side of an admitted request: metered as it passes, never held, and one
//! spend record queued for the control plane when it ends.

use super::{RequestFlow, Stage, Verdict};
use crate::attempt::ANSWERED_BY_HEADER;
use crate::host::Host;
use crate::metering::{tokens_used, Ending, ResponseMeter};
use crate::metrics::Metric;
use crate::spend_queue::Pushed;
use crate::time::{Clock, Millis};
use livegate_contract::KeyHash;

impl RequestFlow {
    /// The response headers: its status, and how its body will be read.
    pub fn on_response_headers(
        &mut self,
        host: &impl Host,
        end_of_stream: bool,
        clock: impl Clock,
    ) -> Verdict {
        // The attempt filter's word on which deployment answered: for the record only,
        // never for the client (a provider's own header of that name goes too).
        let answered_by = if self.plugin.config.deployments.is_empty() {
            None
        } else {
            host.take_response_header(ANSWERED_BY_HEADER)
        };
        if let Some(meter) = self.meter() {
            meter.on_headers(
                host.response_header(":status").as_deref(),
                host.response_header("content-type").as_deref(),
                host.response_header("content-encoding").as_deref(),
            );
            meter.answered_by(answered_by.as_deref());
        }
        self.pass_on(host, end_of_stream, clock)
    }

    /// One chunk of the response body: read, and passed on at once.
    pub fn on_response_body(
        &mut self,
        host: &impl Host,
        end_of_stream: bool,
        clock: impl Clock,
    ) -> Verdict {
        if let Some(meter) = self.meter() {
            if let Some(chunk) = host.response_body() {
                meter.feed(&chunk);
            }
        }
        self.pass_on(host, end_of_stream, clock)
    }

    /// Response trailers end the stream.
    pub fn on_response_trailers(&mut self, host: &impl Host, clock: impl Clock) -> Verdict {
        self.pass_on(host, true, clock)
    }

    /// Every response callback lets the response go on at once; the last one records it
    /// and ends the request's parallel slot (the one time it reads the clock).
    fn pass_on(&mut self, host: &impl Host, end_of_stream: bool, clock: impl Clock) -> Verdict {
        if end_of_stream {
            if let Some(held) = self.take_held() {
                self.end(host, held, clock, Ending::Complete);
            }
        }
        Verdict::Continue
    }

    /// The meter of a released request's response, while it passes.
    fn meter(&mut self) -> Option<&mut ResponseMeter> {
        match &mut self.stage {
            Stage::Released(held) => held.metering.as_mut(),
            _ => None,
        }
    }

    /// The response is over (or the stream ended early): its record goes into the
    /// worker's queue (once: the meter is consumed), and its tokens into the key's window
    /// if they count.
    pub(super) fn finish_metering(
        &self,
        host: &impl Host,
        meter: ResponseMeter,
        tokens_to: TokensTo<'_>,
        now: Option<Millis>,
        ending: Ending,
    ) {
        let (record, unread) = meter.finish_counting(now, ending);
        if unread.oversized {
            host.increment(Metric::UsageOversized);
        }
        if unread.malformed {
            host.increment(Metric::UsageMalformed);
        }
        let record = match record {
            Ok(record) => record,
            Err(why) => {
                host.debug(&format!("livegate: no spend record: {why:?}"));
                host.increment(Metric::SpendRecordsSkipped);
                return;
            }
        };
        if !record.usage_known {
            host.increment(Metric::ResponsesWithoutUsage);
        }
        if record.usage_estimate_reason.is_some() {
            host.increment(Metric::UsageEstimated);
        }
        let tokens = tokens_used(&record);
        let at = record.end_time_ms;
        if tokens_to.key {
            self.plugin
                .with_local(|local| local.add_tokens(&record.key_hash, tokens, at));
        }
        if let Some(window) = tokens_to.model {
            self.plugin
                .with_local(|local| local.add_tokens(window, tokens, at));
        }
        match self.plugin.with_spend(|queue| queue.push(record)) {
            Some(Pushed::Queued) => host.increment(Metric::SpendRecordsQueued),
            Some(Pushed::Dropped) | None => host.increment(Metric::SpendRecordsDropped),
        }
    }
}

/// Which of the worker's token windows a response's tokens count toward.
#[derive(Debug, Clone, Copy)]
pub(super) struct TokensTo<'a> {
    /// The key's own (it has a `tpm_limit`).
    pub key: bool,
    /// The key×model window of the request's model (it has a `model_tpm_limit`).
    pub model: Option<&'a KeyHash>,
}
