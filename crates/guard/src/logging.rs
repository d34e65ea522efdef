//! Secret-safe logging: the same detectors mask PII and secrets in every log line, so a value
//! logged by mistake still never reaches the log sink.
//!
//! Two pieces for `tracing-subscriber`'s fmt layer:
//! - [`RedactingFields`], a field formatter that masks each field value and span attribute;
//! - [`RedactingMakeWriter`], a writer wrapper that masks each whole formatted line (any
//!   formatter, JSON included) before it reaches the sink. Use it as the last line of defence.
//!
//! And [`redact_for_log`] for code that builds log text itself. Masks are bare types
//! (`[CARD]`), never numbered placeholders: logs must not link values across lines.

use std::borrow::Cow;
use std::fmt;
use std::io;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};

use crate::detect::detect;
use crate::redact;

/// `text` with every detected value replaced by its bare type mask.
pub fn redact_for_log(text: &str) -> Cow<'_, str> {
    let found = detect(text);
    if found.is_empty() { Cow::Borrowed(text) } else { Cow::Owned(redact::mask(text, &found)) }
}

/// Field formatter that masks every value (`name=value`, message first, space separated).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingFields;

struct Visitor<'a> {
    out: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        let v = redact_for_log(value);
        self.result = if field.name() == "message" {
            write!(self.out, "{sep}{v}")
        } else {
            write!(self.out, "{sep}{}={v}", field.name())
        };
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

impl<'w> FormatFields<'w> for RedactingFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Visitor { out: writer, first: true, result: Ok(()) };
        fields.record(&mut v);
        v.result
    }
}

/// Wraps a [`MakeWriter`] so each formatted event is masked before it is written.
#[derive(Debug, Clone)]
pub struct RedactingMakeWriter<M> {
    inner: M,
}

impl<M> RedactingMakeWriter<M> {
    /// Wrap `inner`.
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

/// Buffers one event and writes it masked when dropped (the fmt layer writes each event through
/// a fresh writer, then drops it).
pub struct RedactingWriter<W: io::Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: io::Write> RedactingWriter<W> {
    fn flush_masked(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let masked = redact_for_log(&text);
        let r = self.inner.write_all(masked.as_bytes());
        self.buf.clear();
        r
    }
}

impl<W: io::Write> io::Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flush_masked()?;
        self.inner.flush()
    }
}

impl<W: io::Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        // Nowhere to report a failed log write; the line is lost, never written unmasked.
        let _ = self.flush_masked();
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = RedactingWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter { inner: self.inner.make_writer(), buf: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    #[test]
    fn fields_spans_and_messages_are_masked() {
        let sink = Sink::default();
        let subscriber =
            tracing_subscriber::fmt().with_writer(sink.clone()).fmt_fields(RedactingFields).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("turn", customer_email = "ana@example.com");
            let _g = span.enter();
            tracing::warn!(card = "4111 1111 1111 1111", "customer pasted 723.910.967-47");
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("[CARD]") && out.contains("[CPF]") && out.contains("[EMAIL]"), "{out}");
        assert!(!out.contains("4111") && !out.contains("723.910") && !out.contains("ana@"), "{out}");
    }

    #[test]
    fn writer_masks_any_formatter() {
        let sink = Sink::default();
        let subscriber = tracing_subscriber::fmt().json().with_writer(RedactingMakeWriter::new(sink.clone())).finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(
                seed = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
                "oops"
            );
        });
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("[RECOVERY_PHRASE]") && !out.contains("abandon"), "{out}");
        assert_eq!(redact_for_log("nothing here"), "nothing here");
    }
}
