//! A Server-Sent Events parser shared by every SSE-speaking adapter.
//!
//! It works on raw bytes so a chunk boundary may fall anywhere, even inside a UTF-8 character
//! or between the `\r` and `\n` of a line ending. Lines end in `\n`, `\r\n` or `\r`; lines
//! starting with `:` are comments; `data:` lines are joined with `\n`; a blank line dispatches.
//! `id:` and `retry:` are ignored: we never reconnect (that would re-send a billed POST).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` name, empty when the event had none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Incremental SSE parser: feed it bytes, get complete events.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    skip_lf: bool,
    event: String,
    data: String,
    has_data: bool,
    /// Bytes seen in total, to bound a line that never ends.
    max_line: usize,
}

/// Longest line accepted (1 MiB is far above any vendor chunk).
const DEFAULT_MAX_LINE: usize = 1 << 20;

/// The parser refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line was longer than the limit.
    #[error("SSE line longer than {0} bytes")]
    LineTooLong(usize),
    /// A line was not UTF-8.
    #[error("SSE line is not UTF-8")]
    NotUtf8,
}

impl SseParser {
    /// A parser with the default line limit.
    pub fn new() -> Self {
        Self { max_line: DEFAULT_MAX_LINE, ..Self::default() }
    }

    /// Feeds bytes and appends completed events to `out`.
    ///
    /// # Errors
    /// [`SseError`] on a line over the limit or not UTF-8; the parser should then be dropped.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let max = if self.max_line == 0 { DEFAULT_MAX_LINE } else { self.max_line };
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.skip_lf {
                self.skip_lf = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(pos) => {
                    self.line.extend_from_slice(&rest[..pos]);
                    if rest[pos] == b'\r' {
                        self.skip_lf = true;
                    }
                    rest = &rest[pos + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.on_line(&line, out)?;
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                }
            }
            if self.line.len() > max {
                return Err(SseError::LineTooLong(max));
            }
        }
        Ok(())
    }

    /// Whether bytes of an unfinished event are buffered (a stream cut mid-event).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.has_data || !self.event.is_empty()
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent { event: std::mem::take(&mut self.event), data: std::mem::take(&mut self.data) });
            } else {
                self.event.clear();
            }
            self.has_data = false;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        let (name, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match name {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent { event: event.into(), data: data.into() }
    }

    #[test]
    fn line_endings_comments_and_multiline_data() {
        for nl in ["\n", "\r\n", "\r"] {
            let text =
                format!(": keep-alive{nl}event: a{nl}data: x{nl}data:y{nl}{nl}data: z{nl}{nl}event: lonely{nl}{nl}");
            assert_eq!(parse_chunks(&[text.as_bytes()]), vec![ev("a", "x\ny"), ev("", "z")], "{nl:?}");
        }
    }

    #[test]
    fn cr_and_lf_in_different_chunks_are_one_line_end() {
        let out = parse_chunks(&[b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(out, vec![ev("", "a"), ev("", "b")]);
    }

    #[test]
    fn partial_event_is_reported() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"data: {\"a\":", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(p.has_partial());
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(
            datas in proptest::collection::vec("[ -~é漢]{0,20}", 1..5),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
            crlf in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let text: String = datas.iter().map(|d| format!("event: e{nl}data: {d}{nl}{nl}")).collect();
            let bytes = text.as_bytes();
            let mut idx: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            idx.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut prev = 0;
            for i in idx.into_iter().chain([bytes.len()]) {
                chunks.push(&bytes[prev..i]);
                prev = i;
            }
            let out = parse_chunks(&chunks);
            let expected: Vec<SseEvent> = datas.iter().map(|d| ev("e", d)).collect();
            prop_assert_eq!(out, expected);
        }
    }
}
