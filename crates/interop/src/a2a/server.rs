//! Each assistant as an A2A agent: its Agent Card, and a JSON-RPC 2.0 endpoint with the v1.0
//! methods (`SendMessage`, `SendStreamingMessage`, `GetTask`, `CancelTask`, `SubscribeToTask`) and
//! their v0.3 names (`message/send`, `message/stream`, `tasks/get`, `tasks/cancel`,
//! `tasks/resubscribe`), answered in the dialect of the method name.
//!
//! * Cards: `/.well-known/agent-card.json` (the default assistant), and
//!   `/a2a/{assistant}/.well-known/agent-card.json`; the endpoint is `POST /a2a/{assistant}`.
//!   Skills come from the assistant's graph: the handlers its router can send a turn to.
//! * A task is a turn and its follow-ups: its id is the id of the run that began it, its context is
//!   the conversation (a client `contextId` names a conversation, created on first use). Task
//!   states come from run states; an interrupt is `input-required`, and a message with that
//!   `taskId` answers it.
//! * Auth: our API keys (scope `chat`) as `Authorization: Bearer`.
//!
//! Key design decision: the live task table is in memory (bounded); a task id that is no longer
//! there is still answered from the durable run record when the run is one of the tenant's.

use super::wire::{self, Dialect, MessageError, Msg, TaskState};
use crate::turn::{self, Outcome};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use switchboard_server::auth::{Principal, Scope};
use switchboard_server::{ApiError, AppState};
use switchboard_store::records::ConversationRecord;
use tokio::sync::mpsc;

/// Largest text of one incoming message (all its parts), in bytes.
pub(crate) const MAX_MESSAGE_BYTES: usize = 32 << 10;
/// Tasks kept in the live table; the oldest finished ones are dropped first.
const MAX_TASKS: usize = 10_000;

/// JSON-RPC and A2A error codes.
mod code {
    pub(super) const PARSE: i64 = -32700;
    pub(super) const INVALID_REQUEST: i64 = -32600;
    pub(super) const METHOD_NOT_FOUND: i64 = -32601;
    pub(super) const INVALID_PARAMS: i64 = -32602;
    pub(super) const INTERNAL: i64 = -32603;
    pub(super) const TASK_NOT_FOUND: i64 = -32001;
    pub(super) const TASK_NOT_CANCELABLE: i64 = -32002;
    pub(super) const PUSH_NOT_SUPPORTED: i64 = -32003;
    pub(super) const UNSUPPORTED: i64 = -32004;
    pub(super) const CONTENT_TYPE: i64 = -32005;
    pub(super) const VERSION: i64 = -32009;
}

/// A JSON-RPC error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
    fn params(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, message)
    }
    fn task_not_found(id: &str) -> Self {
        Self::new(code::TASK_NOT_FOUND, format!("task `{id}` not found"))
    }
}

impl From<ApiError> for RpcError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let msg = e.body()["error"]["message"].as_str().unwrap_or("").to_string();
        match status.as_u16() {
            404 => Self::new(code::TASK_NOT_FOUND, msg),
            409 => Self::new(code::UNSUPPORTED, msg),
            s if s >= 500 => Self::new(code::INTERNAL, "internal error"),
            _ => Self::params(msg),
        }
    }
}

impl From<MessageError> for RpcError {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::ContentType(m) => Self::new(code::CONTENT_TYPE, m),
            other => Self::params(other.to_string()),
        }
    }
}

fn rpc_error(id: &Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
}

fn rpc_ok(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// One live task.
#[derive(Debug, Clone)]
struct TaskEntry {
    tenant: String,
    assistant: String,
    conversation_id: String,
    context_id: String,
    /// The run now working on it (the last one).
    run: String,
    state: TaskState,
    status_message: Option<Msg>,
    history: Vec<Msg>,
    /// (artifact id, text).
    artifacts: Vec<(String, String)>,
    updated_ms: i64,
}

impl TaskEntry {
    fn to_json(&self, id: &str, d: Dialect, history_length: Option<usize>) -> Value {
        let history = match history_length {
            Some(n) => &self.history[self.history.len().saturating_sub(n)..],
            None => &self.history[..],
        };
        let artifacts: Vec<Value> = self
            .artifacts
            .iter()
            .map(|(aid, text)| json!({"artifactId": aid, "name": "reply", "parts": [wire::text_part(d, text)]}))
            .collect();
        let mut t = json!({
            "id": id, "contextId": self.context_id,
            "status": wire::status(d, self.state, self.status_message.as_ref(), self.updated_ms),
            "artifacts": artifacts,
            "history": history.iter().map(|m| m.to_json(d)).collect::<Vec<_>>(),
            "metadata": {"switchboard": {"conversation_id": self.conversation_id, "run_id": self.run}},
        });
        if d == Dialect::V03 {
            t["kind"] = json!("task");
        }
        t
    }

    /// Applies a finished run's outcome, if it is the task's current run and the task still
    /// waits for it (a cancelled task stays cancelled). Returns whether it changed anything.
    fn finish(&mut self, task_id: &str, run: &str, o: &Outcome) -> bool {
        if self.run != run || self.state != TaskState::Working {
            return false;
        }
        self.state = TaskState::from_run(&o.status);
        self.updated_ms = turn::now_ms();
        let msg_id = format!("{run}-msg");
        if let Some(reply) = &o.reply {
            self.artifacts.push((format!("{run}-reply"), reply.clone()));
        }
        let text = match self.state {
            TaskState::InputRequired => o.question.clone().or_else(|| o.reply.clone()),
            TaskState::Failed => o.error.clone(),
            _ => o.reply.clone(),
        };
        self.status_message = text.map(|t| Msg::agent(msg_id, t, &self.context_id, task_id));
        if let Some(m) = &self.status_message {
            self.history.push(m.clone());
        }
        true
    }
}

/// The live task table.
#[derive(Default)]
pub(crate) struct Tasks {
    map: Mutex<HashMap<String, TaskEntry>>,
}

impl Tasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TaskEntry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, id: String, e: TaskEntry) {
        let mut m = self.lock();
        if m.len() >= MAX_TASKS {
            // Drop the oldest finished tasks (their runs stay readable from the records).
            let mut done: Vec<(i64, String)> =
                m.iter().filter(|(_, t)| t.state.is_terminal()).map(|(k, t)| (t.updated_ms, k.clone())).collect();
            done.sort();
            for (_, k) in done.into_iter().take(MAX_TASKS / 10) {
                m.remove(&k);
            }
        }
        m.insert(id, e);
    }

    fn get(&self, id: &str, tenant: &str, assistant: &str) -> Option<TaskEntry> {
        self.lock().get(id).filter(|t| t.tenant == tenant && t.assistant == assistant).cloned()
    }

    fn update<R>(&self, id: &str, f: impl FnOnce(&mut TaskEntry) -> R) -> Option<R> {
        self.lock().get_mut(id).map(f)
    }
}

/// The A2A server's state.
pub(crate) struct A2a {
    pub(crate) state: AppState,
    tasks: Tasks,
}

impl A2a {
    pub(crate) fn new(state: AppState) -> Self {
        Self { state, tasks: Tasks::default() }
    }
}

// ---- agent card ----

fn base_url(headers: &HeaderMap) -> String {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty());
    let proto = h("x-forwarded-proto").filter(|p| *p == "https" || *p == "http").unwrap_or("http");
    let safe = |s: &&str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    let host = h("x-forwarded-host").filter(safe).or_else(|| h("host").filter(safe));
    format!("{proto}://{}", host.unwrap_or("localhost"))
}

/// The skills of an assistant: the nodes its conditional edges route to (its handlers), else one
/// skill for the whole assistant.
fn skills(name: &str, a: &switchboard_server::Assistant) -> Vec<Value> {
    let g = a.engine.graph().describe();
    let mut seen: Vec<String> = Vec::new();
    for e in g["edges"].as_array().into_iter().flatten() {
        if e["conditional"] == true
            && let Some(to) = e["to"].as_str()
            && to != switchboard_engine::END
            && !seen.iter().any(|s| s == to)
        {
            seen.push(to.to_string());
        }
    }
    if seen.is_empty() {
        return vec![json!({"id": name, "name": name, "description": a.description, "tags": [name]})];
    }
    seen.iter()
        .map(|s| {
            json!({"id": s, "name": s.replace('_', " "), "tags": [name, s],
                   "description": format!("Turns the router of `{name}` sends to its `{s}` handler")})
        })
        .collect()
}

fn card(base: &str, name: &str, a: &switchboard_server::Assistant) -> Value {
    let url = format!("{base}/a2a/{name}");
    json!({
        "name": name,
        "description": a.description,
        "version": a.version,
        "supportedInterfaces": [{"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        // v0.3 readers take these; v1.0 readers ignore them when supportedInterfaces is present.
        "url": url,
        "preferredTransport": "JSONRPC",
        "protocolVersion": "0.3.0",
        "provider": {"organization": "Switchboard", "url": base},
        "capabilities": {"streaming": true, "pushNotifications": false, "extendedAgentCard": false},
        "defaultInputModes": ["text/plain", "application/json"],
        "defaultOutputModes": ["text/plain"],
        "skills": skills(name, a),
        "securitySchemes": {"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer", "description": "A Switchboard API key with the chat scope"}}},
        "securityRequirements": [{"schemes": {"bearer": {"list": []}}}],
    })
}

fn card_response(state: &AppState, headers: &HeaderMap, name: &str) -> Response {
    match state.assistants().get(name) {
        Some(a) => axum::Json(card(&base_url(headers), name, a)).into_response(),
        None => ApiError::NotFound(format!("no assistant `{name}`")).into_response(),
    }
}

/// `GET /.well-known/agent-card.json`: the default assistant's card.
pub(crate) async fn default_card(Extension(ix): Extension<Arc<A2a>>, headers: HeaderMap) -> Response {
    card_response(&ix.state, &headers, ix.state.assistants().default_name())
}

/// `GET /a2a/{assistant}/.well-known/agent-card.json`.
pub(crate) async fn assistant_card(
    Extension(ix): Extension<Arc<A2a>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    card_response(&ix.state, &headers, &name)
}

// ---- JSON-RPC ----

/// `POST /a2a/{assistant}`.
pub(crate) async fn rpc(
    Extension(ix): Extension<Arc<A2a>>,
    Path(assistant): Path<String>,
    p: Result<Principal, ApiError>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let null = Value::Null;
    let p = match p.and_then(|p| p.require(&[Scope::Chat]).map(|()| p)) {
        Ok(p) => p,
        Err(e) => {
            let status = e.status();
            let msg = e.body()["error"]["message"].as_str().unwrap_or("unauthorized").to_string();
            let mut resp = json_response(status, &rpc_error(&null, &RpcError::new(code::INVALID_REQUEST, msg)));
            if status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            }
            return resp;
        }
    };
    if ix.state.assistants().get(&assistant).is_none() {
        return json_response(
            StatusCode::NOT_FOUND,
            &rpc_error(&null, &RpcError::new(code::INVALID_REQUEST, format!("no assistant `{assistant}`"))),
        );
    }
    let body = match Bytes::from_request(req, &ix.state).await {
        Ok(b) => b,
        Err(r) => {
            return json_response(r.status(), &rpc_error(&null, &RpcError::new(code::INVALID_REQUEST, r.body_text())));
        }
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return ok_json(&rpc_error(&null, &RpcError::new(code::PARSE, format!("parse error: {e}")))),
    };
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let req = match envelope(&v) {
        Ok(r) => r,
        Err(e) => return ok_json(&rpc_error(&id, &e)),
    };
    let (dialect, method) = match req.method {
        "SendMessage"
        | "SendStreamingMessage"
        | "GetTask"
        | "CancelTask"
        | "SubscribeToTask"
        | "ListTasks"
        | "GetExtendedAgentCard" => (Dialect::V1, req.method),
        "message/send" => (Dialect::V03, "SendMessage"),
        "message/stream" => (Dialect::V03, "SendStreamingMessage"),
        "tasks/get" => (Dialect::V03, "GetTask"),
        "tasks/cancel" => (Dialect::V03, "CancelTask"),
        "tasks/resubscribe" => (Dialect::V03, "SubscribeToTask"),
        m if m.contains("PushNotification") || m.starts_with("tasks/pushNotification") => {
            return ok_json(&rpc_error(
                &id,
                &RpcError::new(code::PUSH_NOT_SUPPORTED, "push notifications are not supported"),
            ));
        }
        m => {
            return ok_json(&rpc_error(&id, &RpcError::new(code::METHOD_NOT_FOUND, format!("method `{m}` not found"))));
        }
    };
    if dialect == Dialect::V1
        && let Some(v) = headers.get("a2a-version")
    {
        let v = v.to_str().unwrap_or("").trim();
        if !(v.is_empty() || v == "1" || v.starts_with("1.") || v.starts_with("0.3")) {
            return ok_json(&rpc_error(
                &id,
                &RpcError::new(code::VERSION, format!("A2A version `{v}` is not supported; use 1.0")),
            ));
        }
    }
    let cx = Call { ix: ix.clone(), tenant: p.tenant, assistant, dialect, id: id.clone() };
    let params = req.params;
    let r = match method {
        "SendMessage" => cx.send(params).await,
        "SendStreamingMessage" => {
            return cx.send_streaming(params).await.unwrap_or_else(|e| ok_json(&rpc_error(&id, &e)));
        }
        "GetTask" => cx.get(params).await,
        "CancelTask" => cx.cancel(params).await,
        "SubscribeToTask" => return cx.subscribe(params).await.unwrap_or_else(|e| ok_json(&rpc_error(&id, &e))),
        _ => Err(RpcError::new(code::UNSUPPORTED, format!("`{method}` is not supported by this agent"))),
    };
    match r {
        Ok(v) => ok_json(&rpc_ok(&id, v)),
        Err(e) => ok_json(&rpc_error(&id, &e)),
    }
}

fn ok_json(v: &Value) -> Response {
    json_response(StatusCode::OK, v)
}

struct Envelope<'a> {
    method: &'a str,
    params: &'a serde_json::Map<String, Value>,
}

fn envelope(v: &Value) -> Result<Envelope<'_>, RpcError> {
    let invalid = |m: &str| RpcError::new(code::INVALID_REQUEST, m);
    let o = match v {
        Value::Object(o) => o,
        Value::Array(_) => return Err(invalid("batch requests are not supported")),
        _ => return Err(invalid("a request must be a JSON object")),
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("`jsonrpc` must be \"2.0\""));
    }
    match o.get("id") {
        Some(Value::String(_) | Value::Number(_)) => {}
        _ => return Err(invalid("`id` must be a string or a number")),
    }
    let method = o.get("method").and_then(Value::as_str).ok_or_else(|| invalid("`method` must be a string"))?;
    static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> = std::sync::OnceLock::new();
    let params = match o.get("params") {
        None => EMPTY.get_or_init(serde_json::Map::new),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(RpcError::params("`params` must be an object")),
    };
    Ok(Envelope { method, params })
}

/// One call's context.
struct Call {
    ix: Arc<A2a>,
    tenant: String,
    assistant: String,
    dialect: Dialect,
    id: Value,
}

type Params<'a> = &'a serde_json::Map<String, Value>;

fn task_id_param(params: Params<'_>) -> Result<String, RpcError> {
    params
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| RpcError::params("`id` (the task id) is required"))
}

fn history_length(params: Params<'_>) -> Result<Option<usize>, RpcError> {
    let v = params.get("historyLength").or_else(|| params.get("configuration").and_then(|c| c.get("historyLength")));
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| RpcError::params("`historyLength` must be a non-negative integer")),
    }
}

/// A started turn of a task.
struct Begun {
    task_id: String,
    run_id: String,
    context_id: String,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Call {
    fn snapshot(&self, task_id: &str, history: Option<usize>) -> Result<Value, RpcError> {
        let t = self
            .ix
            .tasks
            .get(task_id, &self.tenant, &self.assistant)
            .ok_or_else(|| RpcError::task_not_found(task_id))?;
        Ok(t.to_json(task_id, self.dialect, history))
    }

    /// Starts the turn a message asks for: a new task, or the next turn of an interrupted one.
    async fn begin(&self, params: Params<'_>) -> Result<Begun, RpcError> {
        let m = params.get("message").ok_or_else(|| RpcError::params("`message` is required"))?;
        let mut msg = Msg::parse(m, MAX_MESSAGE_BYTES)?;
        if msg.role != wire::Role::User {
            return Err(RpcError::params("`message.role` must be the user's"));
        }
        let text = msg.full_text();
        if text.trim().is_empty() {
            return Err(RpcError::params("the message has no text"));
        }
        let st = &self.ix.state;
        let (conv, context_id, existing) = match msg.task_id.clone() {
            Some(tid) => {
                let t = self
                    .ix
                    .tasks
                    .get(&tid, &self.tenant, &self.assistant)
                    .ok_or_else(|| RpcError::task_not_found(&tid))?;
                if t.state.is_terminal() {
                    return Err(RpcError::new(
                        code::UNSUPPORTED,
                        format!("task `{tid}` is {}; send a new message without `taskId`", t.state.v03()),
                    ));
                }
                if t.state == TaskState::Working {
                    return Err(RpcError::new(code::UNSUPPORTED, format!("task `{tid}` is still working")));
                }
                let conv = st
                    .records()
                    .conversation(&self.tenant, &t.conversation_id)
                    .await
                    .map_err(|e| RpcError::from(ApiError::from(e)))?
                    .ok_or_else(|| RpcError::task_not_found(&tid))?;
                (conv, t.context_id.clone(), Some(tid))
            }
            None => {
                let conv: ConversationRecord = turn::conversation(
                    st,
                    &self.tenant,
                    &self.assistant,
                    msg.context_id.as_deref(),
                    json!({"channel": "a2a"}),
                )
                .await?;
                let ctx = msg.context_id.clone().unwrap_or_else(|| conv.id.clone());
                (conv, ctx, None)
            }
        };
        let started = turn::say(st, &conv, &text).await?;
        let run_id = started.run_id.clone();
        let task_id = existing.clone().unwrap_or_else(|| run_id.clone());
        msg.context_id = Some(context_id.clone());
        msg.task_id = Some(task_id.clone());
        if msg.id.is_empty() {
            msg.id = format!("{run_id}-in");
        }
        match existing {
            Some(tid) => {
                self.ix.tasks.update(&tid, |t| {
                    t.run = run_id.clone();
                    t.state = TaskState::Working;
                    t.status_message = None;
                    t.history.push(msg);
                    t.updated_ms = turn::now_ms();
                });
            }
            None => self.ix.tasks.insert(
                task_id.clone(),
                TaskEntry {
                    tenant: self.tenant.clone(),
                    assistant: self.assistant.clone(),
                    conversation_id: conv.id.clone(),
                    context_id: context_id.clone(),
                    run: run_id.clone(),
                    state: TaskState::Working,
                    status_message: None,
                    history: vec![msg],
                    artifacts: Vec::new(),
                    updated_ms: turn::now_ms(),
                },
            ),
        }
        // The task is finished from the run's result whoever listens (a client that goes away
        // does not leave it working forever).
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let ix = self.ix.clone();
        let (tid, rid) = (task_id.clone(), run_id.clone());
        tokio::spawn(async move {
            let o = Outcome::from_turn(started.result.await);
            ix.tasks.update(&tid, |t| t.finish(&tid, &rid, &o));
            let _ = done_tx.send(());
        });
        Ok(Begun { task_id, run_id, context_id, done })
    }

    async fn send(&self, params: Params<'_>) -> Result<Value, RpcError> {
        let immediately = params.get("configuration").and_then(|c| c.get("returnImmediately")).and_then(Value::as_bool)
            == Some(true)
            || params.get("configuration").and_then(|c| c.get("blocking")).and_then(Value::as_bool) == Some(false);
        let history = history_length(params)?;
        let b = self.begin(params).await?;
        if !immediately {
            let _ = b.done.await;
        }
        Ok(wire::task_result(self.dialect, self.snapshot(&b.task_id, history)?))
    }

    async fn get(&self, params: Params<'_>) -> Result<Value, RpcError> {
        let id = task_id_param(params)?;
        let history = history_length(params)?;
        match self.snapshot(&id, history) {
            Ok(t) => Ok(t),
            Err(e) => self.rebuilt_from_records(&id).await?.ok_or(e),
        }
    }

    /// A task no longer in the live table, rebuilt from its run's durable record.
    async fn rebuilt_from_records(&self, id: &str) -> Result<Option<Value>, RpcError> {
        let st = &self.ix.state;
        let Some(run) = st.records().run(&self.tenant, id).await.map_err(|e| RpcError::from(ApiError::from(e)))? else {
            return Ok(None);
        };
        let Some(conv) = st
            .records()
            .conversation(&self.tenant, &run.conversation_id)
            .await
            .map_err(|e| RpcError::from(ApiError::from(e)))?
        else {
            return Ok(None);
        };
        if conv.assistant != self.assistant {
            return Ok(None);
        }
        let mut t = TaskEntry {
            tenant: self.tenant.clone(),
            assistant: self.assistant.clone(),
            conversation_id: conv.id.clone(),
            context_id: conv.id.clone(),
            run: run.id.clone(),
            state: TaskState::Working,
            status_message: None,
            history: Vec::new(),
            artifacts: Vec::new(),
            updated_ms: run.finished_at_ms.unwrap_or(run.created_at_ms),
        };
        if run.status != "running" {
            let o = match &run.result {
                Some(r) => Outcome::from_result(r),
                None => Outcome::failed(run.error.clone().unwrap_or_else(|| "the turn failed".into())),
            };
            t.finish(id, &run.id, &o);
            t.updated_ms = run.finished_at_ms.unwrap_or(run.created_at_ms);
        }
        Ok(Some(t.to_json(id, self.dialect, None)))
    }

    async fn cancel(&self, params: Params<'_>) -> Result<Value, RpcError> {
        let id = task_id_param(params)?;
        let t = self.ix.tasks.get(&id, &self.tenant, &self.assistant).ok_or_else(|| RpcError::task_not_found(&id))?;
        if t.state.is_terminal() {
            return Err(RpcError::new(code::TASK_NOT_CANCELABLE, format!("task `{id}` is already {}", t.state.v03())));
        }
        if t.state == TaskState::Working
            && let Some(a) = self.ix.state.assistants().get(&self.assistant)
        {
            // The run may have just ended: then there is nothing left to stop.
            let _ = a.engine.cancel(&t.run);
        }
        self.ix.tasks.update(&id, |t| {
            t.state = TaskState::Canceled;
            t.updated_ms = turn::now_ms();
        });
        self.snapshot(&id, None)
    }

    async fn send_streaming(&self, params: Params<'_>) -> Result<Response, RpcError> {
        let b = self.begin(params).await?;
        let first = self.snapshot(&b.task_id, None)?;
        Ok(self.follow(b.task_id, b.context_id, b.run_id, first))
    }

    async fn subscribe(&self, params: Params<'_>) -> Result<Response, RpcError> {
        let id = task_id_param(params)?;
        let t = self.ix.tasks.get(&id, &self.tenant, &self.assistant).ok_or_else(|| RpcError::task_not_found(&id))?;
        if t.state.is_terminal() {
            return Err(RpcError::new(
                code::UNSUPPORTED,
                format!("task `{id}` is {}: nothing to subscribe to", t.state.v03()),
            ));
        }
        let first = t.to_json(&id, self.dialect, None);
        Ok(self.follow(id, t.context_id, t.run, first))
    }

    /// An SSE stream of a task: its snapshot, its reply as artifact chunks, its final status.
    fn follow(&self, task_id: String, context_id: String, run_id: String, first: Value) -> Response {
        let (tx, mut rx) = mpsc::channel::<Event>(64);
        let (ix, d, rpc_id) = (self.ix.clone(), self.dialect, self.id.clone());
        tokio::spawn(async move {
            let send = async |v: Value| tx.send(Event::default().data(rpc_ok(&rpc_id, v).to_string())).await.is_ok();
            let first_state = TaskState::parse(first["status"]["state"].as_str().unwrap_or(""));
            if !send(wire::task_result(d, first)).await {
                return;
            }
            if first_state != TaskState::Working {
                return;
            }
            let artifact = format!("{run_id}-reply");
            let mut streamed = String::new();
            let mut outcome = Outcome::failed("the turn's stream ended early");
            let mut events = std::pin::pin!(switchboard_server::turns::events(ix.state.clone(), run_id.clone(), 0));
            while let Some(e) = events.next().await {
                match e.event.as_str() {
                    "token" => {
                        let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
                        if let Some(delta) = v.get("delta").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                            let u = wire::artifact_update(
                                d,
                                &task_id,
                                &context_id,
                                &artifact,
                                delta,
                                !streamed.is_empty(),
                                false,
                            );
                            streamed.push_str(delta);
                            if !send(u).await {
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
            // Record the outcome before telling the client, so a GetTask right after sees it.
            ix.tasks.update(&task_id, |t| t.finish(&task_id, &run_id, &outcome));
            let Some(t) = ix.tasks.update(&task_id, |t| t.clone()) else { return };
            if let Some(reply) = &outcome.reply {
                // The rest of the reply after the streamed tokens, or, if the tokens were not its
                // beginning, the whole reply replacing them (`append: false`).
                let (text, append) = match reply.strip_prefix(streamed.as_str()) {
                    Some(rest) if !streamed.is_empty() => (rest, true),
                    _ => (reply.as_str(), false),
                };
                if !send(wire::artifact_update(d, &task_id, &context_id, &artifact, text, append, true)).await {
                    return;
                }
            }
            let status = wire::status(d, t.state, t.status_message.as_ref(), t.updated_ms);
            let _ = send(wire::status_update(d, &task_id, &context_id, status, true)).await;
        });
        let s = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<_, Infallible>);
        Sse::new(s).keep_alive(KeepAlive::default()).into_response()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn envelopes_are_checked() {
        let ok = json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "t"}});
        assert_eq!(envelope(&ok).unwrap().method, "GetTask");
        for (bad, code) in [
            (json!([ok.clone()]), code::INVALID_REQUEST),
            (json!({"jsonrpc": "1.0", "id": 1, "method": "GetTask"}), code::INVALID_REQUEST),
            (json!({"jsonrpc": "2.0", "method": "GetTask"}), code::INVALID_REQUEST),
            (json!({"jsonrpc": "2.0", "id": 1, "method": 3}), code::INVALID_REQUEST),
            (json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": [1]}), code::INVALID_PARAMS),
            (json!(3), code::INVALID_REQUEST),
        ] {
            assert_eq!(envelope(&bad).err().map(|e| e.code), Some(code), "{bad}");
        }
    }

    #[test]
    fn a_task_finishes_only_from_its_current_run() {
        let mut t = TaskEntry {
            tenant: "a".into(),
            assistant: "s".into(),
            conversation_id: "c".into(),
            context_id: "ctx".into(),
            run: "r2".into(),
            state: TaskState::Working,
            status_message: None,
            history: Vec::new(),
            artifacts: Vec::new(),
            updated_ms: 0,
        };
        let done = Outcome { status: "completed".into(), reply: Some("hi".into()), question: None, error: None };
        assert!(!t.finish("t", "r1", &done));
        assert!(t.finish("t", "r2", &done));
        assert!(!t.finish("t", "r2", &done), "applied once");
        assert_eq!((t.state, t.artifacts.len(), t.history.len()), (TaskState::Completed, 1, 1));
        let v = t.to_json("t", Dialect::V1, Some(0));
        assert_eq!(v["status"]["state"], "TASK_STATE_COMPLETED");
        assert_eq!(v["status"]["message"]["parts"][0]["text"], "hi");
        assert_eq!(v["history"], json!([]));
        assert_eq!(t.to_json("t", Dialect::V03, None)["kind"], "task");
    }

    #[test]
    fn the_card_url_follows_the_request_host() {
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:8080".parse().unwrap());
        assert_eq!(base_url(&h), "http://127.0.0.1:8080");
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "agents.example".parse().unwrap());
        assert_eq!(base_url(&h), "https://agents.example");
        h.insert("x-forwarded-host", "evil/path".parse().unwrap());
        assert_eq!(base_url(&h), "https://127.0.0.1:8080");
    }
}
