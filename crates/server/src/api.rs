//! The `/v1` handlers. Each takes the caller's [`Principal`] first and looks every resource up
//! with the caller's tenant, so another tenant's id is indistinguishable from an unknown one (404).

use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::state::{AppState, now_ms, random_hex};
use crate::turns::{self, TurnResult};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_engine::{EngineError, Input};
use switchboard_store::AuditEvent;
use switchboard_store::records::{Claim, ConversationFilter, ConversationRecord, FeedbackRecord, RunRecord};

type Out = Result<Response, ApiError>;

fn ok(v: impl Serialize) -> Out {
    Ok(axum::Json(v).into_response())
}

const MAX_PAGE: u32 = 100;
const DEFAULT_PAGE: u32 = 20;

fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::Invalid(format!("limit must be between 1 and {MAX_PAGE}"))),
    }
}

async fn conversation(state: &AppState, p: &Principal, id: &str) -> Result<ConversationRecord, ApiError> {
    state
        .records()
        .conversation(&p.tenant, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no conversation `{id}`")))
}

async fn run_record(state: &AppState, p: &Principal, id: &str) -> Result<RunRecord, ApiError> {
    state.records().run(&p.tenant, id).await?.ok_or_else(|| ApiError::NotFound(format!("no run `{id}`")))
}

// ---- assistants ----

fn assistant_json(name: &str, a: &crate::state::Assistant, graph: bool) -> Value {
    let mut v = json!({"id": name, "version": a.version, "description": a.description});
    if graph {
        v["graph"] = a.engine.graph().describe();
    }
    v
}

pub(crate) async fn list_assistants(State(state): State<AppState>, p: Principal) -> Out {
    p.require(&[Scope::Chat, Scope::Desk])?;
    let a = &state.inner.assistants;
    let items: Vec<Value> = a.iter().map(|(n, a)| assistant_json(n, a, false)).collect();
    ok(json!({"items": items, "default": a.default_name()}))
}

pub(crate) async fn get_assistant(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Out {
    p.require(&[Scope::Chat, Scope::Desk])?;
    let a = state.inner.assistants.get(&id).ok_or_else(|| ApiError::NotFound(format!("no assistant `{id}`")))?;
    ok(assistant_json(&id, a, true))
}

// ---- conversations ----

#[derive(Serialize)]
struct ConversationOut {
    id: String,
    assistant: String,
    customer_id: Option<String>,
    metadata: Value,
    status: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl From<ConversationRecord> for ConversationOut {
    fn from(c: ConversationRecord) -> Self {
        Self {
            id: c.id,
            assistant: c.assistant,
            customer_id: c.customer_id,
            metadata: c.metadata,
            status: c.status,
            created_at_ms: c.created_at_ms,
            updated_at_ms: c.updated_at_ms,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateConversation {
    assistant: Option<String>,
    customer_id: Option<String>,
    metadata: Option<Value>,
}

fn check_metadata(m: &Option<Value>) -> Result<(), ApiError> {
    match m {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ApiError::Invalid("metadata must be a JSON object".into())),
    }
}

pub(crate) async fn create_conversation(
    State(state): State<AppState>,
    p: Principal,
    Json(body): Json<CreateConversation>,
) -> Out {
    p.require(&[Scope::Chat])?;
    check_metadata(&body.metadata)?;
    let assistants = &state.inner.assistants;
    let assistant = body.assistant.unwrap_or_else(|| assistants.default_name().to_string());
    if assistants.get(&assistant).is_none() {
        return Err(ApiError::Invalid(format!("no assistant `{assistant}`")));
    }
    if body.customer_id.as_ref().is_some_and(|c| c.is_empty() || c.len() > 256) {
        return Err(ApiError::Invalid("customer_id is 1 to 256 characters".into()));
    }
    let now = now_ms();
    let rec = ConversationRecord {
        id: format!("conv_{}", random_hex(16)),
        tenant: p.tenant.clone(),
        assistant,
        customer_id: body.customer_id,
        metadata: body.metadata.unwrap_or_else(|| json!({})),
        status: "idle".into(),
        created_at_ms: now,
        updated_at_ms: now,
    };
    state.records().insert_conversation(&rec).await?;
    Ok((StatusCode::CREATED, axum::Json(ConversationOut::from(rec))).into_response())
}

pub(crate) async fn get_conversation(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Out {
    p.require(&[Scope::Chat, Scope::Desk])?;
    ok(ConversationOut::from(conversation(&state, &p, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListConversations {
    customer_id: Option<String>,
    status: Option<String>,
    created_after_ms: Option<i64>,
    created_before_ms: Option<i64>,
    cursor: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn list_conversations(
    State(state): State<AppState>,
    p: Principal,
    Query(q): Query<ListConversations>,
) -> Out {
    p.require(&[Scope::Chat, Scope::Desk])?;
    let limit = page_size(q.limit)?;
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => {
            let bad = || ApiError::BadRequest("malformed cursor".into());
            let (t, id) = c.split_once('.').ok_or_else(bad)?;
            Some((t.parse::<i64>().map_err(|_| bad())?, id.to_string()))
        }
    };
    let f = ConversationFilter {
        customer_id: q.customer_id,
        status: q.status,
        created_after_ms: q.created_after_ms,
        created_before_ms: q.created_before_ms,
        after,
        limit,
    };
    let items = state.records().list_conversations(&p.tenant, &f).await?;
    let next =
        (items.len() as u32 == limit).then(|| items.last().map(|c| format!("{}.{}", c.created_at_ms, c.id))).flatten();
    let items: Vec<ConversationOut> = items.into_iter().map(Into::into).collect();
    ok(json!({"items": items, "next_cursor": next}))
}

pub(crate) async fn delete_conversation(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Out {
    p.require(&[Scope::Chat, Scope::Desk])?;
    let conv = conversation(&state, &p, &id).await?;
    let deleted = crate::erasure::erase_conversation(&state, &conv)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no conversation `{id}`")))?;
    state
        .audit(
            AuditEvent::new(&p.tenant, p.actor(), "conversation.delete", &id)
                .with_details(json!({"customer_id": conv.customer_id, "deleted": deleted})),
        )
        .await?;
    ok(json!({"id": id, "deleted": deleted}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CustomerPath {
    customer_id: String,
}

/// The right to erasure: every conversation of one customer of the caller's tenant (admin only).
pub(crate) async fn erase_customer(
    State(state): State<AppState>,
    p: Principal,
    Path(CustomerPath { customer_id }): Path<CustomerPath>,
) -> Out {
    p.require(&[Scope::Admin])?;
    if customer_id.is_empty() || customer_id.len() > 256 {
        return Err(ApiError::Invalid("customer_id must be 1 to 256 characters".into()));
    }
    ok(crate::erasure::erase_customer(&state, &p.tenant, &customer_id, &p.actor()).await?)
}

// ---- messages (turns) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageIn {
    text: String,
    metadata: Option<Value>,
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/event-stream")))
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<(Option<String>, u64)>, ApiError> {
    let Some(v) = headers.get("last-event-id") else { return Ok(None) };
    let s = v.to_str().map_err(|_| ApiError::BadRequest("malformed Last-Event-ID".into()))?;
    let (run, seq) = turns::parse_event_id(s).ok_or_else(|| ApiError::BadRequest("malformed Last-Event-ID".into()))?;
    Ok(Some((run.map(str::to_string), seq)))
}

fn sse_response(state: AppState, run_id: String, after: u64) -> Response {
    Sse::new(turns::stream(state, run_id, after)).keep_alive(KeepAlive::default()).into_response()
}

async fn finish(state: AppState, started: turns::Started, sse: bool) -> Out {
    if sse {
        return Ok(sse_response(state, started.run_id, 0));
    }
    let r: TurnResult = started.result.await.map_err(|_| ApiError::Internal("run recorder stopped".into()))??;
    let mut resp = axum::Json(&r).into_response();
    // The engine's own time for this turn, so a client can tell the API's overhead from the run.
    let timing = format!("engine;dur={:.3}", r.engine_time.as_secs_f64() * 1000.0);
    if let Ok(v) = header::HeaderValue::from_str(&timing) {
        resp.headers_mut().insert("server-timing", v);
    }
    Ok(resp)
}

/// The `Idempotency-Key` header, when sent.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let s = v.to_str().map_err(|_| ApiError::BadRequest("malformed Idempotency-Key".into()))?;
    if s.is_empty() || s.len() > 255 {
        return Err(ApiError::BadRequest("Idempotency-Key is 1 to 255 characters".into()));
    }
    Ok(Some(s.to_string()))
}

/// What an idempotency key says about a request.
enum Idem {
    /// Run it (the key, if any, is now claimed for it).
    Proceed,
    /// Answer with the earlier request's response.
    Replay(Response),
}

/// Claims `key` for this request, or finds what the earlier request with the same key did: its
/// result (replayed), its stream (replayed from the first event), or that it is still in flight
/// (409). The same key with another body is 422. A key whose turn failed is freed and claimed again.
async fn claim(
    state: &AppState,
    p: &Principal,
    conv: &ConversationRecord,
    key: &str,
    hash: &str,
    sse: bool,
) -> Result<Idem, ApiError> {
    let records = state.records();
    for _ in 0..3 {
        let (body_hash, run_id) = match records.claim_idempotency(&p.tenant, key, hash, &conv.id, now_ms()).await? {
            Claim::New => return Ok(Idem::Proceed),
            Claim::Existing { body_hash, run_id } => (body_hash, run_id),
        };
        if body_hash.is_empty() {
            continue;
        }
        if body_hash != hash {
            return Err(ApiError::Invalid("this Idempotency-Key was used with another request".into()));
        }
        let in_progress = || ApiError::Conflict("a request with this Idempotency-Key is in progress".into());
        let Some(run_id) = run_id else { return Err(in_progress()) };
        let run = run_record(state, p, &run_id).await?;
        if sse {
            return Ok(Idem::Replay(sse_response(state.clone(), run.id, 0)));
        }
        match (run.status.as_str(), run.result) {
            // Queued: accepted, waiting for a worker of some replica.
            ("running" | "queued", _) => return Err(in_progress()),
            (_, Some(result)) => {
                let mut resp = axum::Json(result).into_response();
                resp.headers_mut().insert("idempotent-replayed", header::HeaderValue::from_static("true"));
                return Ok(Idem::Replay(resp));
            }
            _ => records.release_idempotency(&p.tenant, key).await?,
        }
    }
    Err(ApiError::Conflict("a request with this Idempotency-Key is in progress".into()))
}

fn request_hash(conv: &str, text: &str, metadata: &Option<Value>) -> String {
    crate::auth::hash_key(&json!({"conversation": conv, "text": text, "metadata": metadata}).to_string())
}

pub(crate) async fn post_message(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<MessageIn>,
) -> Out {
    p.require(&[Scope::Chat])?;
    check_metadata(&body.metadata)?;
    // Only the conversation's fixed fields are used below, so a cached record will do.
    let conv = state
        .records()
        .conversation_for_turn(&p.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no conversation `{id}`")))?;
    let sse = wants_sse(&headers);
    if sse && let Some((run, seq)) = last_event_id(&headers)? {
        // A reconnect: resume the stream of the run the client was following.
        let run = run.ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be `<run_id>:<seq>`".into()))?;
        let r = run_record(&state, &p, &run).await?;
        if r.conversation_id != conv.id {
            return Err(ApiError::NotFound(format!("no run `{run}` in this conversation")));
        }
        return Ok(sse_response(state, r.id, seq));
    }
    if body.text.trim().is_empty() {
        return Err(ApiError::Invalid("text must not be empty".into()));
    }
    let assistant = state
        .inner
        .assistants
        .get(&conv.assistant)
        .ok_or_else(|| ApiError::Conflict(format!("assistant `{}` is not served here", conv.assistant)))?;
    let idem = idempotency_key(&headers)?;
    if let Some(key) = &idem
        && let Idem::Replay(resp) =
            claim(&state, &p, &conv, key, &request_hash(&conv.id, &body.text, &body.metadata), sse).await?
    {
        return Ok(resp);
    }
    let meta = body.metadata.unwrap_or_else(|| json!({}));
    let input = match state.inner.assistants.message_resume(&conv.assistant) {
        Some(resume) if !assistant.engine.pending_interrupts(&conv.id).await?.is_empty() => {
            Input::Resume(resume(&body.text, &meta))
        }
        _ => Input::Message((assistant.input)(&body.text, &meta)),
    };
    let started = match turns::start_keyed(&state, &conv, input, "message", idem.as_deref()).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(key) = &idem {
                state.records().release_idempotency(&p.tenant, key).await?;
            }
            return Err(e);
        }
    };
    if let Some(key) = &idem {
        state.records().set_idempotency_run(&p.tenant, key, &started.run_id).await?;
    }
    finish(state, started, sse).await
}

// ---- state, history, fork ----

pub(crate) async fn get_state(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Out {
    p.require(&[Scope::Chat, Scope::Desk])?;
    let conv = conversation(&state, &p, &id).await?;
    let Some(a) = state.inner.assistants.get(&conv.assistant) else {
        return Err(ApiError::Conflict(format!("assistant `{}` is not served here", conv.assistant)));
    };
    let (values, checkpoint) = match a.engine.state(&conv.id).await {
        Ok(s) => {
            let latest = a.engine.history(&conv.id, None, 1).await?;
            (s.to_json(), latest.first().map(|c| c.id))
        }
        Err(EngineError::UnknownConversation(_)) => {
            (switchboard_engine::State::new(a.engine.graph().schema().clone()).to_json(), None)
        }
        Err(e) => return Err(e.into()),
    };
    ok(json!({"conversation_id": conv.id, "checkpoint_id": checkpoint, "values": values}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    before: Option<u64>,
    limit: Option<u32>,
}

pub(crate) async fn get_history(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Out {
    p.require(&[Scope::Desk])?;
    let limit = page_size(q.limit)?;
    let conv = conversation(&state, &p, &id).await?;
    let Some(a) = state.inner.assistants.get(&conv.assistant) else {
        return Err(ApiError::Conflict(format!("assistant `{}` is not served here", conv.assistant)));
    };
    let items = a.engine.history(&conv.id, q.before, limit as usize).await?;
    let next = (items.len() == limit as usize).then(|| items.last().map(|c| c.id)).flatten();
    ok(json!({"items": items, "next_before": next}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForkIn {
    checkpoint_id: u64,
}

pub(crate) async fn fork(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<ForkIn>,
) -> Out {
    p.require(&[Scope::Desk])?;
    let conv = conversation(&state, &p, &id).await?;
    let Some(a) = state.inner.assistants.get(&conv.assistant) else {
        return Err(ApiError::Conflict(format!("assistant `{}` is not served here", conv.assistant)));
    };
    let new = a.engine.fork(&conv.id, body.checkpoint_id, None).await?;
    ok(json!({"conversation_id": conv.id, "checkpoint_id": new, "forked_from": body.checkpoint_id}))
}

// ---- interrupts ----

pub(crate) async fn list_interrupts(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Out {
    p.require(&[Scope::Desk])?;
    let conv = conversation(&state, &p, &id).await?;
    let Some(a) = state.inner.assistants.get(&conv.assistant) else {
        return Err(ApiError::Conflict(format!("assistant `{}` is not served here", conv.assistant)));
    };
    ok(json!({"items": a.engine.pending_interrupts(&conv.id).await?}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResumeIn {
    value: Value,
}

pub(crate) async fn resume(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ResumeIn>,
) -> Out {
    p.require(&[Scope::Desk])?;
    let conv = conversation(&state, &p, &id).await?;
    let Some(a) = state.inner.assistants.get(&conv.assistant) else {
        return Err(ApiError::Conflict(format!("assistant `{}` is not served here", conv.assistant)));
    };
    if a.engine.pending_interrupts(&conv.id).await?.is_empty() {
        return Err(EngineError::NothingToResume(conv.id).into());
    }
    let approved = body.value.get("approved").cloned();
    let started = turns::start(&state, &conv, Input::Resume(body.value), "resume").await?;
    // The decision, not the whole value (which may carry a human's free text). The run has started,
    // so a log that cannot be written is reported, not turned into a failed request.
    let event = AuditEvent::new(&p.tenant, p.actor(), "interrupt.resume", &conv.id)
        .with_details(json!({"approved": approved.unwrap_or(Value::Null), "run_id": started.run_id}));
    if let Err(e) = state.audit(event).await {
        tracing::warn!(error = %e, conversation = %conv.id, "audit record of a resume was not written");
    }
    finish(state, started, wants_sse(&headers)).await
}

// ---- runs ----

fn run_json(r: &RunRecord) -> Value {
    json!({
        "id": r.id,
        "conversation_id": r.conversation_id,
        "kind": r.kind,
        "status": r.status,
        "result": r.result,
        "error": r.error,
        "created_at_ms": r.created_at_ms,
        "finished_at_ms": r.finished_at_ms,
    })
}

pub(crate) async fn get_run(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Out {
    p.require(&[Scope::Chat, Scope::Desk])?;
    ok(run_json(&run_record(&state, &p, &id).await?))
}

pub(crate) async fn cancel_run(State(state): State<AppState>, p: Principal, Path(id): Path<String>) -> Out {
    p.require(&[Scope::Chat, Scope::Desk])?;
    let r = run_record(&state, &p, &id).await?;
    if let Some(d) = state.distributed() {
        crate::dist::cancel(d, &r).await?;
        return Ok((StatusCode::ACCEPTED, axum::Json(json!({"id": r.id, "cancelling": true}))).into_response());
    }
    let conv = conversation(&state, &p, &r.conversation_id).await?;
    let Some(a) = state.inner.assistants.get(&conv.assistant) else {
        return Err(ApiError::Conflict(format!("assistant `{}` is not served here", conv.assistant)));
    };
    a.engine.cancel(&r.id)?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"id": r.id, "cancelling": true}))).into_response())
}

pub(crate) async fn run_events(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Out {
    p.require(&[Scope::Chat, Scope::Desk])?;
    let r = run_record(&state, &p, &id).await?;
    let after = match last_event_id(&headers)? {
        Some((Some(run), _)) if run != r.id => {
            return Err(ApiError::BadRequest("Last-Event-ID belongs to another run".into()));
        }
        Some((_, seq)) => seq,
        None => 0,
    };
    Ok(sse_response(state, r.id, after))
}

// ---- feedback ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedbackIn {
    message_id: Option<String>,
    rating: i64,
    comment: Option<String>,
}

pub(crate) async fn feedback(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<FeedbackIn>,
) -> Out {
    p.require(&[Scope::Chat, Scope::Desk])?;
    if !(-1..=5).contains(&body.rating) {
        return Err(ApiError::Invalid("rating must be between -1 and 5".into()));
    }
    if body.comment.as_ref().is_some_and(|c| c.chars().count() > 1000) {
        return Err(ApiError::Invalid("comment is at most 1000 characters".into()));
    }
    let conv = conversation(&state, &p, &id).await?;
    let rec = FeedbackRecord {
        id: format!("fb_{}", random_hex(8)),
        tenant: p.tenant.clone(),
        conversation_id: conv.id,
        message_id: body.message_id,
        rating: body.rating,
        comment: body.comment,
        created_at_ms: now_ms(),
    };
    state.records().insert_feedback(&rec).await?;
    let rating = rec.rating.to_string();
    state.inner.metrics.add(switchboard_telemetry::metrics::names::FEEDBACK, &[("rating", rating.as_str())], 1.0);
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "id": rec.id, "conversation_id": rec.conversation_id, "message_id": rec.message_id,
            "rating": rec.rating, "comment": rec.comment, "created_at_ms": rec.created_at_ms,
        })),
    )
        .into_response())
}
