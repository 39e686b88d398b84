//! Logs through tracing. On a terminal: human-readable lines on stderr. Otherwise (the host reads
//! our stdout line by line): one JSON object per line with a lower-case `level` the host files by.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::env_vars;

/// Where log lines go.
pub enum Sink {
    /// The supervisor: stdout, which the host reads.
    Stdout,
    /// A worker: a saved copy of the descriptor that was fd 1 before output capture took it.
    File(std::fs::File),
}

pub fn init(level: &str, sink: Sink) {
    let filter = EnvFilter::try_from_env(env_vars::RUST_LOG)
        .unwrap_or_else(|_| EnvFilter::new(format!("{}={level},warn", env!("CARGO_CRATE_NAME"))));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // Ignore "already set": tests and check modes may initialise twice.
    let _ = match sink {
        Sink::Stdout if std::io::stdout().is_terminal() => builder
            .with_writer(std::io::stderr)
            .with_ansi(true)
            .try_init(),
        Sink::Stdout => builder
            .event_format(JsonLines)
            .with_writer(std::io::stdout)
            .try_init(),
        Sink::File(file) => {
            let json = !file.is_terminal();
            let file = Mutex::new(file);
            let writer = move || LineWriter(file.lock().ok().and_then(|f| f.try_clone().ok()));
            if json {
                builder
                    .event_format(JsonLines)
                    .with_writer(writer)
                    .try_init()
            } else {
                builder.with_ansi(false).with_writer(writer).try_init()
            }
        }
    };
}

/// Panics are logged like everything else (message and location), so they reach the host's log
/// at level `error` instead of being lost on a captured or unread stderr.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| tracing::error!(panic = %info, "panicked")));
}

/// Writes to a cloned file handle, dropping the line if the handle could not be cloned.
struct LineWriter(Option<std::fs::File>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.0 {
            Some(file) => file.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `{"timestamp":…,"level":"info","target":…,"msg":…, fields…}` with no ANSI codes.
struct JsonLines;

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = FieldsToJson(Map::new());
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::String(crate::time::now_rfc3339()),
        );
        line.insert(
            "level".into(),
            Value::String(level_name(event.metadata().level()).into()),
        );
        line.insert(
            "target".into(),
            Value::String(event.metadata().target().into()),
        );
        if let Some(message) = fields.0.remove("message") {
            line.insert("msg".into(), message);
        }
        line.append(&mut fields.0);
        writeln!(writer, "{}", Value::Object(line))
    }
}

struct FieldsToJson(Map<String, Value>);

impl Visit for FieldsToJson {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
}
