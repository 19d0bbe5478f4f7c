//! Estimates of unread usage: on the safe side, and marked with their reason.

use super::*;
use crate::usage::{Limits, Meter, Reading};
use proptest::prelude::*;

fn context(status: u16, complete: bool) -> Context {
    Context {
        released: true,
        model_route: true,
        prompt_bytes: 401,
        status,
        complete,
    }
}

fn report(streamed: bool) -> Report {
    Report {
        reading: Reading::absent(),
        streamed,
        oversized: 0,
        malformed: 0,
        encoded: false,
        seen_bytes: 1_000,
        content_bytes: 40,
    }
}

fn tokens(prompt: u64, completion: u64) -> Tokens {
    Tokens {
        prompt: Some(prompt),
        completion: Some(completion),
        total: Some(prompt + completion),
        ..Tokens::default()
    }
}

fn stated(mut r: Report, t: Tokens) -> Report {
    r.reading.usage = Usage::Known(t);
    r
}

#[test]
fn stated_usage_of_a_whole_answer_is_charged_as_stated() {
    let r = stated(report(true), tokens(3, 5));
    assert_eq!(
        charge(Some(&r), context(200, true)),
        Charge::Known(tokens(3, 5))
    );
    // An upstream's refusal that states usage is charged what it states.
    assert_eq!(
        charge(Some(&r), context(400, true)),
        Charge::Known(tokens(3, 5))
    );
}

/// A request without a model (a `GET`) whose answer states usage: OpenAI's retrieval of a
/// background response or of an Assistants run, the only answer that carries their usage.
/// Charged as stated, or a client could have its tokens generated unbilled; the cost is
/// that a second retrieval of the same response is charged again (docs/metering.md).
#[test]
fn stated_usage_on_a_route_without_a_model_is_charged_as_stated() {
    let retrieval = Context {
        model_route: false,
        prompt_bytes: 0,
        ..context(200, true)
    };
    let r = stated(report(false), tokens(3, 5));
    assert_eq!(charge(Some(&r), retrieval), Charge::Known(tokens(3, 5)));
    // Stating none (a response still in progress, a file), it is not charged.
    assert_eq!(charge(Some(&report(false)), retrieval), Charge::None);
    // The background `POST` that queued it stated `usage: null`: charged its estimate.
    let queued =
        br#"{"id":"resp_1","object":"response","status":"queued","model":"gpt-4o","usage":null}"#;
    let mut meter = Meter::for_response(Some(b"application/json"), None, Limits::default());
    meter.feed(queued);
    assert!(matches!(
        charge(Some(&meter.finish()), context(200, true)),
        Charge::Estimated(_, EstimateReason::Absent)
    ));
}

#[test]
fn a_stream_cut_early_is_charged_at_least_what_was_seen() {
    // No usage chunk yet: the prompt's bytes / 4 rounded up, the content seen / 4.
    assert_eq!(
        charge(Some(&report(true)), context(200, false)),
        Charge::Estimated(tokens(101, 10), EstimateReason::ClientDisconnected)
    );
    // Anthropic's message_start stated the prompt and 1 output token; more was streamed.
    let r = stated(report(true), tokens(500, 1));
    assert_eq!(
        charge(Some(&r), context(200, false)),
        Charge::Estimated(tokens(500, 10), EstimateReason::ClientDisconnected)
    );
    // A client gone before the response headers: the upstream had the prompt.
    assert_eq!(
        charge(None, context(0, false)),
        Charge::Estimated(tokens(101, 0), EstimateReason::ClientDisconnected)
    );
}

#[test]
fn a_cut_stream_keeps_its_stated_cache_writes_and_charges_reads_and_reasoning_in_full() {
    // Anthropic's message_start stated its cache counts, then the stream was cut: the
    // writes were billed when the prompt was read; cache reads and reasoning would lower
    // the price of counts that are now a guess, so they are not carried.
    let said = Tokens {
        cached: Some(2000),
        reasoning: Some(9),
        cache_creation: Some(1500),
        ..tokens(3512, 1)
    };
    let r = stated(report(true), said);
    let Charge::Estimated(t, EstimateReason::ClientDisconnected) =
        charge(Some(&r), context(200, false))
    else {
        panic!("not estimated");
    };
    assert_eq!((t.prompt, t.completion), (Some(3512), Some(10)));
    assert_eq!(
        (t.cached, t.reasoning, t.cache_creation),
        (None, None, Some(1500))
    );
    // Stated whole, every detail is charged as stated.
    assert_eq!(charge(Some(&r), context(200, true)), Charge::Known(said));
}

#[test]
fn each_unreadable_answer_is_estimated_with_its_reason() {
    let mut large = report(false);
    large.oversized = 1;
    assert_eq!(
        charge(Some(&large), context(200, true)),
        Charge::Estimated(tokens(101, 250), EstimateReason::BodyTooLarge)
    );
    let mut event = report(true);
    event.oversized = 2;
    assert_eq!(
        charge(Some(&event), context(200, true)),
        Charge::Estimated(tokens(101, 10), EstimateReason::EventTooLarge)
    );
    let mut encoded = report(false);
    encoded.encoded = true;
    assert_eq!(
        charge(Some(&encoded), context(200, true)),
        Charge::Estimated(tokens(101, 1_000), EstimateReason::Encoded),
        "a compressed byte is counted as a token: its text is larger"
    );
    assert_eq!(
        charge(Some(&report(false)), context(201, true)),
        Charge::Estimated(tokens(101, 250), EstimateReason::Absent)
    );
}

#[test]
fn what_never_reached_the_upstream_or_was_refused_there_is_not_charged() {
    let r = report(false);
    let not_released = Context {
        released: false,
        ..context(0, false)
    };
    assert_eq!(charge(None, not_released), Charge::None);
    let no_model = Context {
        model_route: false,
        ..context(200, true)
    };
    assert_eq!(charge(Some(&r), no_model), Charge::None);
    for status in [400, 429, 500, 503] {
        assert_eq!(charge(Some(&r), context(status, true)), Charge::None);
    }
}

proptest! {
    /// Whatever a stream says and wherever it is cut, a billable answer is charged at
    /// least the estimate's floor, and never less than what it stated.
    #[test]
    fn a_billable_answer_is_never_charged_less_than_the_floor_or_what_it_stated(
        stream in proptest::collection::vec(any::<u8>(), 0..2_000),
        usage_at in proptest::option::of(0usize..2_000),
        prompt_bytes in 0u64..100_000,
        complete in any::<bool>(),
    ) {
        let mut bytes = stream.clone();
        if let Some(at) = usage_at {
            let at = at.min(bytes.len());
            let usage = b"\n\ndata: {\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9}}\n\n";
            bytes.splice(at..at, usage.iter().copied());
        }
        let mut meter = Meter::for_response(Some(b"text/event-stream"), None, Limits::default());
        meter.feed(&bytes);
        let report = meter.finish();
        let context = Context { released: true, model_route: true, prompt_bytes, status: 200, complete };
        let (t, known) = match charge(Some(&report), context) {
            Charge::Known(t) => (t, true),
            Charge::Estimated(t, _) => (t, false),
            Charge::None => panic!("a billable answer charged nothing"),
        };
        if let Usage::Known(s) = report.reading.usage {
            prop_assert!(t.prompt >= s.prompt && t.completion >= s.completion);
        }
        if !known {
            prop_assert!(t.prompt.unwrap_or(0) >= prompt_bytes.div_ceil(4));
            prop_assert!(t.completion.unwrap_or(0) >= report.content_bytes.div_ceil(4));
            prop_assert!(t.total.unwrap_or(0) >= t.prompt.unwrap_or(0) + t.completion.unwrap_or(0));
        }
    }
}
