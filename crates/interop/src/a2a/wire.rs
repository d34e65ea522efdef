//! A2A objects in neutral form, and their JSON in the two dialects we speak: v1.0 (ProtoJSON:
//! camelCase, `TASK_STATE_*` and `ROLE_*` enums, one-of wrappers `task` / `statusUpdate` /
//! `artifactUpdate`) and v0.3 (`kind` discriminators, lower-case states, `final` on the last
//! status update). Parsing accepts either.

use serde_json::{Value, json};

/// Which dialect a peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// A2A 1.0 (PascalCase methods).
    V1,
    /// A2A 0.3 (`message/send`, `kind` discriminators).
    V03,
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Accepted, not started.
    Submitted,
    /// Running.
    Working,
    /// Waiting for the client's input (our interrupts).
    InputRequired,
    /// Waiting for credentials.
    AuthRequired,
    /// Finished.
    Completed,
    /// Cancelled.
    Canceled,
    /// Failed.
    Failed,
    /// Refused by the agent.
    Rejected,
    /// A state we do not know.
    Unknown,
}

impl TaskState {
    /// The v1.0 name.
    pub fn v1(self) -> &'static str {
        match self {
            Self::Submitted => "TASK_STATE_SUBMITTED",
            Self::Working => "TASK_STATE_WORKING",
            Self::InputRequired => "TASK_STATE_INPUT_REQUIRED",
            Self::AuthRequired => "TASK_STATE_AUTH_REQUIRED",
            Self::Completed => "TASK_STATE_COMPLETED",
            Self::Canceled => "TASK_STATE_CANCELED",
            Self::Failed => "TASK_STATE_FAILED",
            Self::Rejected => "TASK_STATE_REJECTED",
            Self::Unknown => "TASK_STATE_UNSPECIFIED",
        }
    }

    /// The v0.3 name.
    pub fn v03(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Working => "working",
            Self::InputRequired => "input-required",
            Self::AuthRequired => "auth-required",
            Self::Completed => "completed",
            Self::Canceled => "canceled",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Unknown => "unknown",
        }
    }

    /// The name in a dialect.
    pub fn name(self, d: Dialect) -> &'static str {
        match d {
            Dialect::V1 => self.v1(),
            Dialect::V03 => self.v03(),
        }
    }

    /// Parses either dialect's name; anything else is [`TaskState::Unknown`].
    pub fn parse(s: &str) -> Self {
        let all = [
            Self::Submitted,
            Self::Working,
            Self::InputRequired,
            Self::AuthRequired,
            Self::Completed,
            Self::Canceled,
            Self::Failed,
            Self::Rejected,
        ];
        all.into_iter()
            .find(|t| t.v1() == s || t.v03() == s || (s == "cancelled" && *t == Self::Canceled))
            .unwrap_or(Self::Unknown)
    }

    /// Completed, canceled, failed or rejected: nothing more will happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Canceled | Self::Failed | Self::Rejected)
    }

    /// Waiting for the client (input or auth required).
    pub fn is_interrupted(self) -> bool {
        matches!(self, Self::InputRequired | Self::AuthRequired)
    }

    /// The state a run's status maps to.
    pub fn from_run(status: &str) -> Self {
        match status {
            "running" => Self::Working,
            "completed" => Self::Completed,
            "interrupted" => Self::InputRequired,
            "cancelled" | "superseded" | "rolled_back" => Self::Canceled,
            _ => Self::Failed,
        }
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The client.
    User,
    /// The agent.
    Agent,
}

/// A message, text only (data parts are carried as their JSON text).
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    /// Its id.
    pub id: String,
    /// Its author.
    pub role: Role,
    /// Its text.
    pub text: String,
    /// Structured parts (`data`), sent as they are.
    pub data: Vec<Value>,
    /// The context it belongs to.
    pub context_id: Option<String>,
    /// The task it continues.
    pub task_id: Option<String>,
}

/// Why an incoming message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The message is malformed.
    #[error("{0}")]
    Invalid(String),
    /// A part of a kind we do not accept (files, raw bytes, URLs).
    #[error("{0}")]
    ContentType(String),
    /// The text is larger than the limit.
    #[error("message text is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl Msg {
    /// An agent message.
    pub fn agent(id: String, text: String, context_id: &str, task_id: &str) -> Self {
        Self {
            id,
            role: Role::Agent,
            text,
            data: Vec::new(),
            context_id: Some(context_id.to_string()),
            task_id: Some(task_id.to_string()),
        }
    }

    /// Parses a message of either dialect, keeping at most `max_bytes` of text.
    ///
    /// # Errors
    /// [`MessageError`].
    pub fn parse(v: &Value, max_bytes: usize) -> Result<Self, MessageError> {
        let o = v.as_object().ok_or_else(|| MessageError::Invalid("`message` must be an object".into()))?;
        let role = match o.get("role").and_then(Value::as_str) {
            Some("ROLE_USER" | "user") => Role::User,
            Some("ROLE_AGENT" | "agent") => Role::Agent,
            _ => return Err(MessageError::Invalid("`message.role` must be ROLE_USER (or `user`)".into())),
        };
        let parts = o
            .get("parts")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| MessageError::Invalid("`message.parts` must be a non-empty array".into()))?;
        let mut text = String::new();
        let mut data = Vec::new();
        for p in parts {
            let kind = p.get("kind").and_then(Value::as_str);
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(t);
            } else if let Some(d) = p.get("data").filter(|_| kind.is_none_or(|k| k == "data")) {
                data.push(d.clone());
            } else if kind == Some("file")
                || p.get("raw").is_some()
                || p.get("url").is_some()
                || p.get("file").is_some()
            {
                return Err(MessageError::ContentType("only text and data parts are accepted".into()));
            } else {
                return Err(MessageError::Invalid("a part has no `text` or `data`".into()));
            }
        }
        let size = text.len() + data.iter().map(|d| d.to_string().len()).sum::<usize>();
        if size > max_bytes {
            return Err(MessageError::TooLarge { size, limit: max_bytes });
        }
        let s = |k: &str| o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        Ok(Self {
            id: s("messageId").unwrap_or_default(),
            role,
            text,
            data,
            context_id: s("contextId"),
            task_id: s("taskId"),
        })
    }

    /// The text the assistant sees: the text parts, then each data part as JSON.
    pub fn full_text(&self) -> String {
        let mut out = self.text.clone();
        for d in &self.data {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&d.to_string());
        }
        out
    }

    /// JSON in a dialect.
    pub fn to_json(&self, d: Dialect) -> Value {
        let mut parts: Vec<Value> = Vec::new();
        if !self.text.is_empty() || self.data.is_empty() {
            parts.push(text_part(d, &self.text));
        }
        for x in &self.data {
            parts.push(match d {
                Dialect::V1 => json!({"data": x}),
                Dialect::V03 => json!({"kind": "data", "data": x}),
            });
        }
        let mut v = match d {
            Dialect::V1 => {
                json!({"messageId": self.id, "role": match self.role { Role::User => "ROLE_USER", Role::Agent => "ROLE_AGENT" }, "parts": parts})
            }
            Dialect::V03 => {
                json!({"kind": "message", "messageId": self.id, "role": match self.role { Role::User => "user", Role::Agent => "agent" }, "parts": parts})
            }
        };
        if let Some(c) = &self.context_id {
            v["contextId"] = json!(c);
        }
        if let Some(t) = &self.task_id {
            v["taskId"] = json!(t);
        }
        v
    }
}

/// A text part in a dialect.
pub fn text_part(d: Dialect, text: &str) -> Value {
    match d {
        Dialect::V1 => json!({"text": text}),
        Dialect::V03 => json!({"kind": "text", "text": text}),
    }
}

/// The text of an artifact's or message's `parts` (either dialect).
pub fn parts_text(parts: &Value) -> String {
    parts
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""))
        .unwrap_or_default()
}

/// A task's status.
pub fn status(d: Dialect, state: TaskState, message: Option<&Msg>, timestamp_ms: i64) -> Value {
    let mut s = json!({"state": state.name(d), "timestamp": rfc3339(timestamp_ms)});
    if let Some(m) = message {
        s["message"] = m.to_json(d);
    }
    s
}

/// A `statusUpdate` stream result (v0.3: `status-update` with `final`).
pub fn status_update(d: Dialect, task_id: &str, context_id: &str, status: Value, is_final: bool) -> Value {
    match d {
        Dialect::V1 => json!({"statusUpdate": {"taskId": task_id, "contextId": context_id, "status": status}}),
        Dialect::V03 => {
            json!({"kind": "status-update", "taskId": task_id, "contextId": context_id, "status": status, "final": is_final})
        }
    }
}

/// An `artifactUpdate` stream result carrying a text chunk.
pub fn artifact_update(
    d: Dialect,
    task_id: &str,
    context_id: &str,
    artifact_id: &str,
    text: &str,
    append: bool,
    last_chunk: bool,
) -> Value {
    let artifact = json!({"artifactId": artifact_id, "name": "reply", "parts": [text_part(d, text)]});
    match d {
        Dialect::V1 => json!({"artifactUpdate": {"taskId": task_id, "contextId": context_id, "artifact": artifact,
                                                  "append": append, "lastChunk": last_chunk}}),
        Dialect::V03 => json!({"kind": "artifact-update", "taskId": task_id, "contextId": context_id,
                               "artifact": artifact, "append": append, "lastChunk": last_chunk}),
    }
}

/// Wraps a task as a `SendMessage` / stream result (v1: `{"task": …}`; v0.3: the task itself).
pub fn task_result(d: Dialect, task: Value) -> Value {
    match d {
        Dialect::V1 => json!({"task": task}),
        Dialect::V03 => task,
    }
}

/// RFC 3339 UTC time of a Unix time in ms.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn states_round_trip_in_both_dialects() {
        for s in [TaskState::Working, TaskState::InputRequired, TaskState::Completed, TaskState::Canceled] {
            assert_eq!(TaskState::parse(s.v1()), s);
            assert_eq!(TaskState::parse(s.v03()), s);
        }
        assert_eq!(TaskState::parse("TASK_STATE_FROBNICATED"), TaskState::Unknown);
        assert_eq!(TaskState::from_run("interrupted"), TaskState::InputRequired);
        assert!(TaskState::Completed.is_terminal() && !TaskState::InputRequired.is_terminal());
    }

    #[test]
    fn messages_of_both_dialects_parse() {
        let v1 = json!({"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}, {"data": {"a": 1}}], "taskId": "t"});
        let m = Msg::parse(&v1, 100).unwrap();
        assert_eq!((m.text.as_str(), m.task_id.as_deref(), m.full_text().as_str()), ("hi", Some("t"), "hi\n{\"a\":1}"));
        let v03 =
            json!({"kind": "message", "messageId": "m1", "role": "user", "parts": [{"kind": "text", "text": "yo"}]});
        assert_eq!(Msg::parse(&v03, 100).unwrap().text, "yo");
        assert_eq!(Msg::parse(&v03, 100).unwrap().to_json(Dialect::V03)["parts"][0]["kind"], "text");
        let big = json!({"role": "ROLE_USER", "parts": [{"text": "x".repeat(101)}]});
        assert!(matches!(Msg::parse(&big, 100), Err(MessageError::TooLarge { size: 101, limit: 100 })));
        let file = json!({"role": "ROLE_USER", "parts": [{"url": "https://x/y.pdf"}]});
        assert!(matches!(Msg::parse(&file, 100), Err(MessageError::ContentType(_))));
        for bad in [json!({"parts": [{"text": "x"}]}), json!({"role": "ROLE_USER", "parts": []}), json!("x")] {
            assert!(matches!(Msg::parse(&bad, 100), Err(MessageError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_115_200_123), "2025-11-26T00:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
