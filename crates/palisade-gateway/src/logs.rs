//! The gateway's logs: which lines are written ([`parse_filter`], the
//! `RUST_LOG` syntax) and storms summarised ([`StormFilter`] lets a burst
//! of one event, from the same place in the code for the same provider,
//! through each window and counts the rest, then says how many were left
//! out).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// The target of the access log (one event per request: never summarised).
pub const ACCESS_TARGET: &str = "palisade_gateway::access";
/// The target of the summaries.
pub const STORM_TARGET: &str = "palisade_gateway::storm";

/// Reads a log filter written as `RUST_LOG` is (`info`,
/// `warn,palisade_gateway::access=info`), refusing one it cannot read
/// whole with what is wrong (an unknown level, a bad directive) instead of
/// dropping the bad part.
///
/// ```
/// use palisade_gateway::logs::parse_filter;
///
/// assert!(parse_filter("warn,palisade_gateway::access=info").is_ok());
/// let err = parse_filter("loud").unwrap_err();
/// assert!(err.contains("loud"), "{err}");
/// ```
pub fn parse_filter(directives: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    const LEVELS: &str = "error, warn, info, debug, trace, off";
    let trimmed = directives.trim();
    if trimmed.is_empty() {
        return Err(format!("is empty: give a level ({LEVELS}) or target=level"));
    }
    for d in trimmed.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        // A bare word would be taken as a target to log at every level:
        // here it must be a level, so a misspelt one is caught.
        if !d.contains(['=', '[']) {
            if d.parse::<tracing_subscriber::filter::LevelFilter>()
                .is_err()
            {
                return Err(format!(
                    "{d:?} is not a level ({LEVELS}); a target's level is written target=level"
                ));
            }
        } else if let Err(e) = d.parse::<tracing_subscriber::filter::Directive>() {
            return Err(format!(
                "{d:?} is not a log directive ({e}); give a level ({LEVELS}) or target=level"
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(trimmed)
        .map_err(|e| format!("{trimmed:?} is not a log filter: {e}"))
}

/// A per-layer filter that keeps a storm of identical events from
/// flooding the logs: of the events from one place in the code for one
/// provider (their `provider` field), `burst` go through per `window`;
/// the rest are counted, and when that event comes again after the window,
/// one line (level `WARN`, target `palisade_gateway::storm`) says how many
/// were left out and which event they were. Debug and trace events and the
/// access log pass untouched.
///
/// The summary line is written by the filter itself, in the log's format
/// ([`Summaries`]): an event sent from inside a filter would be dropped
/// by `tracing`, which does not dispatch events within a dispatch.
///
/// ```
/// use palisade_gateway::logs::{StormFilter, Summaries};
/// use std::time::Duration;
/// use tracing_subscriber::prelude::*;
///
/// let filter = StormFilter::new(5, Duration::from_secs(1), Summaries::Text, std::io::stderr);
/// let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
/// let _subscriber = tracing_subscriber::registry().with(logs);
/// ```
pub struct StormFilter {
    burst: u32,
    window: Duration,
    seen: Mutex<HashMap<(Identifier, String), Seen>>,
    format: Summaries,
    out: Box<dyn Fn() -> Box<dyn std::io::Write> + Send + Sync>,
}

impl std::fmt::Debug for StormFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StormFilter")
            .field("burst", &self.burst)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// How a [`StormFilter`] writes its summaries: as the log's own lines are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summaries {
    /// `2026-12-01T00:00:00.000000Z  WARN palisade_gateway::storm: ...`
    Text,
    /// One JSON object, as `tracing-subscriber`'s JSON lines.
    Json,
}

#[derive(Debug)]
struct Seen {
    since: Instant,
    passed: u32,
    left_out: u64,
}

impl StormFilter {
    /// `burst` events of a kind per `window` (at least one); summaries
    /// written in `format` to what `out` makes.
    pub fn new<W: std::io::Write + 'static>(
        burst: u32,
        window: Duration,
        format: Summaries,
        out: impl Fn() -> W + Send + Sync + 'static,
    ) -> Self {
        StormFilter {
            burst: burst.max(1),
            window,
            seen: Mutex::new(HashMap::new()),
            format,
            out: Box::new(move || Box::new(out())),
        }
    }

    /// Writes one summary line.
    fn summarise(&self, left_out: u64, fields: &Fields) {
        let at = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let message = format!("{left_out} more of this event were not logged");
        let line = match self.format {
            Summaries::Text => format!(
                "{at}  WARN {STORM_TARGET}: {message} left_out={left_out} provider={:?} event={:?}\n",
                fields.provider, fields.message
            ),
            Summaries::Json => {
                let line = serde_json::json!({
                    "timestamp": at.to_string(),
                    "level": "WARN",
                    "fields": {
                        "message": message,
                        "left_out": left_out,
                        "provider": fields.provider,
                        "event": fields.message,
                    },
                    "target": STORM_TARGET,
                });
                format!("{line}\n")
            }
        };
        let _ = (self.out)().write_all(line.as_bytes());
    }
}

/// An event's `provider` and `message`.
#[derive(Default)]
struct Fields {
    provider: String,
    message: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "provider" => self.provider = value.to_owned(),
            "message" => self.message = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "provider" => self.provider = format!("{value:?}"),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S> Filter<S> for StormFilter {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::INFO
            || meta.target() == ACCESS_TARGET
            || meta.target() == STORM_TARGET
        {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let now = Instant::now();
        let (pass, left_out) = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let s = seen
                .entry((meta.callsite(), fields.provider.clone()))
                .or_insert(Seen {
                    since: now,
                    passed: 0,
                    left_out: 0,
                });
            let mut told = 0;
            if now.duration_since(s.since) >= self.window {
                told = std::mem::take(&mut s.left_out);
                s.since = now;
                s.passed = 0;
            }
            if s.passed < self.burst {
                s.passed += 1;
                (true, told)
            } else {
                s.left_out += 1;
                (false, told)
            }
        };
        if left_out > 0 {
            self.summarise(left_out, &fields);
        }
        pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tracing_subscriber::prelude::*;

    /// Log lines written, shared with the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// One place in the code, as a storm comes from.
    fn opened(provider: &str) {
        tracing::warn!(provider, "breaker opened");
    }

    fn exhausted() {
        tracing::warn!(provider = "p", "retry budget exhausted");
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_is_a_burst_and_a_count_and_other_providers_are_their_own() {
        let lines = Lines::default();
        let writer = lines.clone();
        let summaries = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(StormFilter::new(
                3,
                Duration::from_secs(1),
                Summaries::Text,
                move || summaries.clone(),
            ));
        let _guard = tracing_subscriber::registry().with(layer).set_default();
        for _ in 0..1_000 {
            opened("primary");
        }
        opened("secondary");
        for i in 0..50 {
            tracing::info!(target: ACCESS_TARGET, n = i, "answered");
        }
        let text = lines.text();
        assert_eq!(text.matches("breaker opened").count(), 4, "{text}");
        assert_eq!(
            text.matches("answered").count(),
            50,
            "the access log is never summarised"
        );
        // The window passes; the next one says how many were left out.
        tokio::time::advance(Duration::from_millis(1_001)).await;
        opened("primary");
        let text = lines.text();
        assert!(
            text.contains("997 more of this event were not logged"),
            "{text}"
        );
        assert!(
            text.contains("storm: 997 more") && text.contains("provider=\"primary\""),
            "{text}"
        );
        // The summary names the event (5), and the event itself passes (6).
        assert_eq!(text.matches("breaker opened").count(), 6, "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_json_summary_is_a_json_line() {
        let lines = Lines::default();
        let out = lines.clone();
        let filter = StormFilter::new(1, Duration::from_secs(1), Summaries::Json, move || {
            out.clone()
        });
        let _guard = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::sink)
                    .with_filter(filter),
            )
            .set_default();
        for _ in 0..10 {
            exhausted();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        exhausted();
        let text = lines.text();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["fields"]["left_out"], 9);
        assert_eq!(line["fields"]["event"], "retry budget exhausted");
        assert_eq!(line["target"], STORM_TARGET);
    }
}
