//! The agent desk's HTTP endpoints, merged into the server's router (`desk` scope):
//!
//! | method and path | body | does |
//! |---|---|---|
//! | `GET /v1/desk/queue` | | `{"items":[{conversation_id, customer_id, priority, reason, summary, status, queued_at_ms, sla_due_ms, assigned_to}]}`, most urgent first |
//! | `POST /v1/desk/conversations/{id}/claim` | `{"agent"}` | assign it to an agent |
//! | `POST /v1/desk/conversations/{id}/messages` | `{"text"}` | the assigned agent writes to the customer |
//! | `POST /v1/desk/conversations/{id}/approvals/{interrupt_id}` | `{"approve": bool}` | grant or deny a pending tool call |
//! | `POST /v1/desk/conversations/{id}/handback` | | hand it back to the bot, which resumes its flow |
//! | `GET /v1/desk/conversations/{id}` | | redacted transcript, summary, routing trace, pending approvals, handoff |
//!
//! Every conversation is looked up with the caller's tenant (another tenant's id is a 404), and
//! must belong to this assistant. A desk action the handoff state does not allow (claiming a
//! conversation nobody asked a human for, handing back one nobody claimed) is a 409.

use crate::assistant::{AssistantError, Runtime, TurnView};
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_server::auth::{Principal, Scope};
use switchboard_server::extract::{Json, Path};
use switchboard_server::{ApiError, AppState};

impl From<AssistantError> for ApiError {
    fn from(e: AssistantError) -> Self {
        match e {
            AssistantError::Engine(e) => ApiError::Engine(e),
            AssistantError::UnknownApproval(_) => ApiError::NotFound(e.to_string()),
            AssistantError::Transition(_) => ApiError::Conflict(e.to_string()),
            AssistantError::Invalid(m) => ApiError::Invalid(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

type Out = Result<axum::Json<Value>, ApiError>;

async fn conversation(st: &AppState, p: &Principal, rt: &Runtime, id: &str) -> Result<Option<String>, ApiError> {
    p.require(&[Scope::Desk])?;
    let conv = st
        .records()
        .conversation(&p.tenant, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no conversation `{id}`")))?;
    if conv.assistant != rt.assistant.spec().assistant.name {
        return Err(ApiError::NotFound(format!("conversation `{id}` is not served by the desk's assistant")));
    }
    Ok(conv.customer_id)
}

fn turn_json(id: &str, t: &TurnView) -> Value {
    json!({
        "conversation_id": id,
        "status": t.status.as_str(),
        "replies": t.replies,
        "handoff": t.handoff,
        "tool_calls": t.tool_calls,
        "pending_approvals": t.interrupts.iter().filter(|i| i.payload["type"] == "approval").map(|i| i.payload.clone()).collect::<Vec<_>>(),
    })
}

/// Rebuilds the desk's queue (kept in memory) from the stored conversations of this assistant,
/// once per process: after a restart, conversations that were waiting for or with a human are
/// back in the queue with their priority, SLA and assignee, read from their checkpointed handoff
/// state. One state read per stored conversation of the assistant.
///
/// # Errors
/// Store failures (the next queue request tries again).
pub async fn restore_queue(st: &AppState, rt: &Runtime) -> Result<(), ApiError> {
    let desk = rt.assistant.desk();
    desk.restore_once(async {
        let name = &rt.assistant.spec().assistant.name;
        let mut after = None;
        let mut restored = 0usize;
        loop {
            let page = st.records().conversations_idle_before(i64::MAX, after.clone(), 200).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.updated_at_ms, last.id.clone()));
            for c in page.iter().filter(|c| &c.assistant == name) {
                if desk.get(&c.id).is_some() {
                    continue;
                }
                let Ok(state) = rt.engine.state(&c.id).await else { continue };
                let h = crate::handoff::Handoff::from_value(state.get("handoff"));
                if h.status.with_human() {
                    desk.sync(&c.id, c.customer_id.as_deref(), &h);
                    restored += 1;
                }
            }
        }
        if restored > 0 {
            tracing::info!(restored, "desk queue rebuilt from stored conversations");
        }
        Ok::<(), ApiError>(())
    })
    .await
}

async fn queue(st: AppState, p: Principal, rt: Runtime) -> Out {
    p.require(&[Scope::Desk])?;
    restore_queue(&st, &rt).await?;
    let mut items = Vec::new();
    for item in rt.assistant.desk().queue() {
        if st.records().conversation(&p.tenant, &item.conversation_id).await?.is_some() {
            items.push(item);
        }
    }
    Ok(axum::Json(json!({"items": items})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    agent: String,
}

fn check_agent(agent: &str) -> Result<(), ApiError> {
    if agent.trim().is_empty() || agent.len() > 128 {
        return Err(ApiError::Invalid("agent is 1 to 128 characters".into()));
    }
    Ok(())
}

async fn claim(st: AppState, p: Principal, rt: Runtime, id: String, body: ClaimBody) -> Out {
    let customer = conversation(&st, &p, &rt, &id).await?;
    check_agent(&body.agent)?;
    let t = rt.claim(&id, customer.as_deref(), body.agent.trim()).await?;
    audit(&st, &p, "handoff.claim", &id, serde_json::json!({"agent": body.agent.trim()})).await;
    Ok(axum::Json(turn_json(&id, &t)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    text: String,
}

async fn assigned_agent(rt: &Runtime, id: &str, p: &Principal) -> Result<String, ApiError> {
    let s = rt.engine.state(id).await.map_err(ApiError::Engine)?;
    Ok(crate::handoff::Handoff::from_value(s.get("handoff")).assigned_to.unwrap_or_else(|| p.key_id.clone()))
}

async fn message(st: AppState, p: Principal, rt: Runtime, id: String, body: MessageBody) -> Out {
    let customer = conversation(&st, &p, &rt, &id).await?;
    if body.text.trim().is_empty() || body.text.len() > 8000 {
        return Err(ApiError::Invalid("text is 1 to 8000 characters".into()));
    }
    let agent = assigned_agent(&rt, &id, &p).await?;
    let t = rt.agent_message(&id, customer.as_deref(), &agent, &body.text).await?;
    Ok(axum::Json(turn_json(&id, &t)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalBody {
    approve: bool,
}

async fn approval(st: AppState, p: Principal, rt: Runtime, id: String, interrupt: String, body: ApprovalBody) -> Out {
    let customer = conversation(&st, &p, &rt, &id).await?;
    let by = assigned_agent(&rt, &id, &p).await?;
    // Recording: a decision on an approval is a turn of the conversation's cassette.
    let tape = rt.assistant.tape();
    let before = match &tape {
        Some(_) => rt.engine.state(&id).await.map(|s| s.to_json()).unwrap_or(Value::Null),
        None => Value::Null,
    };
    let started = std::time::Instant::now();
    let t = rt.approve(&id, customer.as_deref(), &interrupt, body.approve, &by).await?;
    if let Some(tape) = tape {
        let interrupts: Vec<Value> = t.interrupts.iter().map(|i| i.payload.clone()).collect();
        let input = crate::cassette::TurnInput::Approve(body.approve);
        let turn = tape.finish_turn(&id, input, &before, &t.state.to_json(), &interrupts, started.elapsed());
        if let Ok(turn) = serde_json::to_value(turn) {
            let name = &rt.assistant.spec().assistant.name;
            st.store_cassette_turn((p.tenant.as_str(), id.as_str()), name, customer.as_deref(), turn).await;
        }
    }
    let details = serde_json::json!({"interrupt": interrupt, "approved": body.approve, "agent": by});
    audit(&st, &p, "approval.resolve", &id, details).await;
    Ok(axum::Json(turn_json(&id, &t)))
}

async fn handback(st: AppState, p: Principal, rt: Runtime, id: String) -> Out {
    let customer = conversation(&st, &p, &rt, &id).await?;
    let agent = assigned_agent(&rt, &id, &p).await?;
    let t = rt.hand_back(&id, customer.as_deref(), &agent).await?;
    audit(&st, &p, "handoff.hand_back", &id, serde_json::json!({"agent": agent})).await;
    Ok(axum::Json(turn_json(&id, &t)))
}

/// Records a desk action in the audit log. The action has happened; a log that cannot be written
/// is reported, not turned into a failed request.
async fn audit(st: &AppState, p: &Principal, action: &str, conversation: &str, details: serde_json::Value) {
    let event = switchboard_server::AuditEvent::new(&p.tenant, p.actor(), action, conversation).with_details(details);
    if let Err(e) = st.audit(event).await {
        tracing::warn!(error = %e, conversation, action, "audit record of a desk action was not written");
    }
}

async fn detail(st: AppState, p: Principal, rt: Runtime, id: String) -> Out {
    let customer = conversation(&st, &p, &rt, &id).await?;
    let s = match rt.engine.state(&id).await {
        Ok(s) => s,
        Err(switchboard_engine::EngineError::UnknownConversation(_)) => {
            return Ok(axum::Json(json!({
                "conversation_id": id, "customer_id": customer, "handoff": crate::handoff::Handoff::default(),
                "summary": null, "transcript": [], "routing_trace": [], "pending_approvals": [], "flows": [], "slots": null,
            })));
        }
        Err(e) => return Err(ApiError::Engine(e)),
    };
    let handoff = crate::handoff::Handoff::from_value(s.get("handoff"));
    // Messages are stored redacted (the input guard runs before anything is stored); mask again
    // for what a human sees, in case a detector was added since.
    let transcript: Vec<Value> = s
        .get_array("messages")
        .iter()
        .map(|m| {
            let mut v = json!({
                "id": m.get("id"), "role": m.get("role"),
                "content": rt.assistant.mask(m["content"].as_str().unwrap_or("")),
            });
            for k in ["author", "handler"] {
                if let Some(x) = m.get(k).filter(|x| !x.is_null()) {
                    v[k] = x.clone();
                }
            }
            v
        })
        .collect();
    Ok(axum::Json(json!({
        "conversation_id": id,
        "customer_id": customer,
        "handoff": handoff,
        "summary": handoff.summary,
        "transcript": transcript,
        "routing_trace": s.get_array("routing_trace"),
        "pending_approvals": rt.pending_approvals(&id).await?,
        "flows": s.get("flows"),
        "slots": s.get("slots"),
        "tool_calls": s.get_array("tool_calls"),
    })))
}

/// The router type of the desk's endpoints (merge it with `switchboard_server::app_with`).
pub type DeskRoutes = Router<AppState>;

/// The desk routes over a runtime (its engine must be the one the server runs the assistant on).
pub fn routes(rt: Runtime) -> DeskRoutes {
    let (r1, r2, r3, r4, r5, r6) = (rt.clone(), rt.clone(), rt.clone(), rt.clone(), rt.clone(), rt);
    Router::new()
        .route("/v1/desk/queue", get(move |State(st): State<AppState>, p: Principal| queue(st, p, r1.clone())))
        .route(
            "/v1/desk/conversations/{id}",
            get(move |State(st): State<AppState>, p: Principal, Path(id): Path<String>| detail(st, p, r2.clone(), id)),
        )
        .route(
            "/v1/desk/conversations/{id}/claim",
            post(move |State(st): State<AppState>, p: Principal, Path(id): Path<String>, Json(b): Json<ClaimBody>| {
                claim(st, p, r3.clone(), id, b)
            }),
        )
        .route(
            "/v1/desk/conversations/{id}/messages",
            post(
                move |State(st): State<AppState>, p: Principal, Path(id): Path<String>, Json(b): Json<MessageBody>| {
                    message(st, p, r4.clone(), id, b)
                },
            ),
        )
        .route(
            "/v1/desk/conversations/{id}/approvals/{interrupt_id}",
            post(
                move |State(st): State<AppState>,
                      p: Principal,
                      Path((id, interrupt)): Path<(String, String)>,
                      Json(b): Json<ApprovalBody>| { approval(st, p, r5.clone(), id, interrupt, b) },
            ),
        )
        .route(
            "/v1/desk/conversations/{id}/handback",
            post(move |State(st): State<AppState>, p: Principal, Path(id): Path<String>| {
                handback(st, p, r6.clone(), id)
            }),
        )
}
