//! The OpenAI-compatible facade: `POST /v1/chat/completions` (JSON, or SSE chunks ending in
//! `data: [DONE]`) and `GET /v1/models`, so any OpenAI client library can chat with an assistant.
//!
//! * `model` names the assistant; an unknown one is a 404 `model_not_found`.
//! * The bearer token is one of our API keys (scope `chat`).
//! * The conversation is named by the `X-Switchboard-Conversation` header, else the `user` field
//!   (created on first use, per tenant); with neither, each request is a new conversation. Only the
//!   last `user` message is the new turn: the rest of `messages` is the client's copy of a history
//!   we already hold.
//! * The reply carries our routing metadata in the extension field `switchboard`
//!   (`conversation_id`, `run_id`, `status`, `routing`, `interrupts`).
//!
//! Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, which also
//! satisfies ours (`code` and `message`).

use crate::turn::{self, Outcome};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::{Value, json};
use std::convert::Infallible;
use switchboard_server::auth::{Principal, Scope};
use switchboard_server::{ApiError, AppState};
use tokio::sync::mpsc;

/// The header that names the conversation.
pub const CONVERSATION_HEADER: &str = "x-switchboard-conversation";

/// Longest accepted new user message, in bytes.
const MAX_MESSAGE_BYTES: usize = 32 << 10;

/// An error in OpenAI's shape.
#[derive(Debug)]
pub(crate) struct OaiError {
    status: StatusCode,
    code: String,
    message: String,
    param: Option<&'static str>,
    retry_after: Option<axum::http::HeaderValue>,
}

impl OaiError {
    fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request".into(),
            message: message.into(),
            param,
            retry_after: None,
        }
    }
}

impl From<ApiError> for OaiError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let body = e.body();
        let mut code = body["error"]["code"].as_str().unwrap_or("internal").to_string();
        if status == StatusCode::UNAUTHORIZED {
            code = "invalid_api_key".into();
        }
        let retry_after = e.into_response().headers().get(header::RETRY_AFTER).cloned();
        Self {
            status,
            code,
            message: body["error"]["message"].as_str().unwrap_or("").to_string(),
            param: None,
            retry_after,
        }
    }
}

fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

impl OaiError {
    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": error_type(self.status), "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for OaiError {
    fn into_response(self) -> Response {
        let mut resp =
            (self.status, [(header::CONTENT_TYPE, "application/json")], self.body().to_string()).into_response();
        if let Some(v) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

type Out = Result<Response, OaiError>;

fn principal(p: Result<Principal, ApiError>) -> Result<Principal, OaiError> {
    let p = p?;
    p.require(&[Scope::Chat])?;
    Ok(p)
}

/// `GET /v1/models`: the assistants, as models.
pub(crate) async fn models(State(state): State<AppState>, p: Result<Principal, ApiError>) -> Out {
    principal(p)?;
    let data: Vec<Value> = state
        .assistants()
        .iter()
        .map(|(name, a)| {
            json!({"id": name, "object": "model", "created": 0, "owned_by": "switchboard",
                   "description": a.description, "version": a.version})
        })
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

/// The parts of a chat-completions request we use.
#[derive(Debug)]
struct ChatRequest {
    model: String,
    text: String,
    stream: bool,
    include_usage: bool,
    user: Option<String>,
}

fn parse(body: &[u8]) -> Result<ChatRequest, OaiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| OaiError::invalid(format!("the body is not valid JSON: {e}"), None))?;
    let obj = v.as_object().ok_or_else(|| OaiError::invalid("the body must be a JSON object", None))?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| OaiError::invalid("`model` (the assistant) is required", Some("model")))?
        .to_string();
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| OaiError::invalid("`messages` must be a non-empty array", Some("messages")))?;
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .ok_or_else(|| OaiError::invalid("`messages` has no `user` message", Some("messages")))?;
    let text = match last_user.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    _ => {
                        return Err(OaiError::invalid("only text content parts are supported", Some("messages")));
                    }
                }
            }
            out
        }
        _ => return Err(OaiError::invalid("the last user message has no text content", Some("messages"))),
    };
    if text.trim().is_empty() {
        return Err(OaiError::invalid("the last user message is empty", Some("messages")));
    }
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(OaiError::invalid(
            format!("the last user message exceeds {MAX_MESSAGE_BYTES} bytes"),
            Some("messages"),
        ));
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(OaiError::invalid("`stream` must be a boolean", Some("stream"))),
    };
    let include_usage =
        obj.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
    let user = match obj.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(OaiError::invalid("`user` must be a string", Some("user"))),
    };
    Ok(ChatRequest { model, text, stream, include_usage, user })
}

fn conversation_key(headers: &HeaderMap, user: Option<&str>) -> Result<Option<String>, OaiError> {
    match headers.get(CONVERSATION_HEADER) {
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().to_string()))
            .map_err(|_| OaiError::invalid("malformed X-Switchboard-Conversation header", None)),
        None => Ok(user.map(str::to_string)),
    }
}

fn created() -> u64 {
    (turn::now_ms() / 1000) as u64
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    p: Result<Principal, ApiError>,
    headers: HeaderMap,
    req: Request,
) -> Out {
    let p = principal(p)?;
    let body = match Bytes::from_request(req, &state).await {
        Ok(b) => b,
        Err(r) => {
            return Err(OaiError {
                status: r.status(),
                code: if r.status() == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "bad_request" }
                    .into(),
                message: r.body_text(),
                param: None,
                retry_after: None,
            });
        }
    };
    let req = parse(&body)?;
    if state.assistants().get(&req.model).is_none() {
        return Err(OaiError {
            status: StatusCode::NOT_FOUND,
            code: "model_not_found".into(),
            message: format!(
                "The model `{}` does not exist: it must name an assistant (see GET /v1/models)",
                req.model
            ),
            param: Some("model"),
            retry_after: None,
        });
    }
    let key = conversation_key(&headers, req.user.as_deref())?;
    let conv = turn::conversation(&state, &p.tenant, &req.model, key.as_deref(), json!({"channel": "openai"})).await?;
    let started = turn::say(&state, &conv, &req.text).await?;
    let id = format!("chatcmpl-{}", started.run_id);
    if req.stream {
        return Ok(stream(state, conv, started.run_id, id, req.model, req.include_usage));
    }
    let run_id = started.run_id.clone();
    let outcome = match started.result.await {
        Ok(Err(e)) if !e.status().is_server_error() => return Err(e.into()),
        result => Outcome::from_turn(result),
    };
    let interrupts = pending(&state, &conv).await;
    let ext = json!({
        "conversation_id": conv.id, "run_id": run_id, "status": outcome.status,
        "routing": turn::routing(&state, &conv).await, "interrupts": interrupts,
    });
    if outcome.status == "failed" {
        return Err(OaiError {
            status: StatusCode::BAD_GATEWAY,
            code: "turn_failed".into(),
            message: outcome.error.unwrap_or_else(|| "the turn failed".into()),
            param: None,
            retry_after: None,
        });
    }
    Ok(axum::Json(json!({
        "id": id, "object": "chat.completion", "created": created(), "model": req.model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": outcome.text(), "refusal": null}}],
        "switchboard": ext,
    }))
    .into_response())
}

async fn pending(state: &AppState, conv: &switchboard_store::records::ConversationRecord) -> Value {
    match state.assistants().get(&conv.assistant) {
        Some(a) => a.engine.pending_interrupts(&conv.id).await.map_or(json!([]), |i| json!(i)),
        None => json!([]),
    }
}

/// The streamed reply: a role chunk, a content chunk per token (or one with the whole reply when
/// the assistant streamed none), a final chunk with `finish_reason` and our metadata, `[DONE]`.
fn stream(
    state: AppState,
    conv: switchboard_store::records::ConversationRecord,
    run_id: String,
    id: String,
    model: String,
    include_usage: bool,
) -> Response {
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let created = created();
        let chunk = |delta: Value, finish: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let send = async |v: Value| tx.send(Event::default().data(v.to_string())).await.is_ok();
        if !send(chunk(json!({"role": "assistant", "content": ""}), Value::Null)).await {
            return;
        }
        let mut streamed = String::new();
        let mut outcome = Outcome::failed("the turn's stream ended early");
        let mut events = std::pin::pin!(switchboard_server::turns::events(state.clone(), run_id.clone(), 0));
        while let Some(e) = events.next().await {
            match e.event.as_str() {
                "token" => {
                    let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
                    if let Some(d) = v.get("delta").and_then(Value::as_str).filter(|d| !d.is_empty()) {
                        streamed.push_str(d);
                        if !send(chunk(json!({"content": d}), Value::Null)).await {
                            return;
                        }
                    }
                }
                "result" | "error" => {
                    outcome = Outcome::from_event(&e.event, &e.data);
                    break;
                }
                _ => {}
            }
        }
        if outcome.status == "failed" {
            let err = json!({"error": {"message": outcome.error.unwrap_or_default(), "type": "server_error",
                                       "param": null, "code": "turn_failed"}});
            let _ = send(err).await;
            let _ = tx.send(Event::default().data("[DONE]")).await;
            return;
        }
        // What the tokens did not already say: the rest of the reply (or all of it when the
        // assistant streamed nothing, or something else than its final reply).
        let full = outcome.text();
        let text = full.strip_prefix(streamed.as_str()).unwrap_or(&full).to_string();
        if !text.is_empty() && !send(chunk(json!({"content": text}), Value::Null)).await {
            return;
        }
        let mut last = chunk(json!({}), json!("stop"));
        last["switchboard"] = json!({
            "conversation_id": conv.id, "run_id": run_id, "status": outcome.status,
            "routing": turn::routing(&state, &conv).await, "interrupts": pending(&state, &conv).await,
        });
        if !send(last).await {
            return;
        }
        if include_usage {
            // We do not count tokens of the assistant's models here: report zero, not a guess.
            let usage = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                               "choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}});
            let _ = send(usage).await;
        }
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    let s = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<_, Infallible>);
    let mut resp = Sse::new(s).keep_alive(KeepAlive::default()).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_last_user_message_is_the_turn() {
        let r = parse(
            br#"{"model": "support", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "second"}]}],
                "stream": true, "user": "u1", "temperature": 0.2}"#,
        )
        .unwrap();
        assert_eq!(
            (r.model.as_str(), r.text.as_str(), r.stream, r.user.as_deref()),
            ("support", "second", true, Some("u1"))
        );
    }

    #[test]
    fn bad_requests_name_the_parameter() {
        for (body, param) in [
            (&br#"{"messages": [{"role": "user", "content": "x"}]}"#[..], Some("model")),
            (br#"{"model": "s", "messages": []}"#, Some("messages")),
            (br#"{"model": "s", "messages": [{"role": "system", "content": "x"}]}"#, Some("messages")),
            (br#"{"model": "s", "messages": [{"role": "user", "content": "  "}]}"#, Some("messages")),
            (
                br#"{"model": "s", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
                Some("messages"),
            ),
            (br#"{"model": "s", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#, Some("stream")),
            (br#"[1]"#, None),
            (br#"{"model": "#, None),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.param, param, "{}", String::from_utf8_lossy(body));
            assert_eq!(e.body()["error"]["type"], "invalid_request_error");
        }
    }
}
