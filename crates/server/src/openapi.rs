//! The OpenAPI 3.1 document served at `/openapi.json`, generated at start from the route table
//! below and the served assistants (their names are the `assistant` enum).
//!
//! Every operation documents the error statuses it can answer with the shared `Error` schema, so
//! a client (or schemathesis) can check that no response falls outside the spec.

use crate::state::AppState;
use serde_json::{Map, Value, json};

fn nullable(t: &str) -> Value {
    json!({"type": [t, "null"]})
}

fn schemas(assistants: Vec<String>) -> Value {
    let interrupt = json!({
        "type": "object", "required": ["task_id", "node", "payload"],
        "properties": {"task_id": {"type": "string"}, "node": {"type": "string"}, "payload": {}}
    });
    json!({
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
            }}
        },
        "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "Assistant": {
            "type": "object", "required": ["id", "version", "description"],
            "properties": {"id": {"type": "string"}, "version": {"type": "string"},
                "description": {"type": "string"}, "graph": {"type": "object"}}
        },
        "AssistantList": {
            "type": "object", "required": ["items", "default"],
            "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Assistant"}},
                "default": {"type": "string"}}
        },
        "CreateConversation": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "assistant": {"type": ["string", "null"], "enum": assistants.into_iter().map(Value::String).chain([Value::Null]).collect::<Vec<_>>()},
                "customer_id": {"type": ["string", "null"], "minLength": 1, "maxLength": 256},
                "metadata": {"type": ["object", "null"]}
            }
        },
        "Conversation": {
            "type": "object",
            "required": ["id", "assistant", "customer_id", "metadata", "status", "created_at_ms", "updated_at_ms"],
            "properties": {
                "id": {"type": "string"}, "assistant": {"type": "string"}, "customer_id": nullable("string"),
                "metadata": {"type": "object"},
                "status": {"type": "string", "enum": ["idle", "running", "interrupted", "failed"]},
                "created_at_ms": {"type": "integer"}, "updated_at_ms": {"type": "integer"}
            }
        },
        "ConversationList": {
            "type": "object", "required": ["items", "next_cursor"],
            "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Conversation"}},
                "next_cursor": nullable("string")}
        },
        "Deleted": {
            "type": "object", "required": ["id", "deleted"],
            "properties": {"id": {"type": "string"}, "deleted": {
                "type": "object", "required": ["checkpoints", "messages", "runs", "events", "feedback", "idempotency_keys", "cassette_turns"],
                "properties": {"checkpoints": {"type": "integer"}, "messages": {"type": "integer"}, "runs": {"type": "integer"},
                    "events": {"type": "integer"}, "feedback": {"type": "integer"},
                    "idempotency_keys": {"type": "integer"}, "cassette_turns": {"type": "integer"}}
            }}
        },
        "CustomerErasure": {
            "type": "object", "required": ["customer_id", "conversations", "deleted"],
            "properties": {"customer_id": {"type": "string"}, "conversations": {"type": "integer"},
                "deleted": {"$ref": "#/components/schemas/Erased"}}
        },
        "Erased": {
            "type": "object", "required": ["checkpoints", "messages", "runs", "events", "feedback", "idempotency_keys", "cassette_turns"],
            "properties": {"checkpoints": {"type": "integer"}, "messages": {"type": "integer"}, "runs": {"type": "integer"},
                "events": {"type": "integer"}, "feedback": {"type": "integer"},
                "idempotency_keys": {"type": "integer"}, "cassette_turns": {"type": "integer"}}
        },
        "Message": {
            "type": "object", "required": ["text"], "additionalProperties": false,
            "properties": {"text": {"type": "string", "minLength": 1}, "metadata": {"type": ["object", "null"]}}
        },
        "Interrupt": interrupt,
        "TurnResult": {
            "type": "object",
            "required": ["run_id", "conversation_id", "status", "checkpoint_id", "reply", "interrupts", "steps"],
            "properties": {
                "run_id": {"type": "string"}, "conversation_id": {"type": "string"},
                "status": {"type": "string", "enum": ["completed", "interrupted", "cancelled", "superseded", "rolled_back"]},
                "checkpoint_id": nullable("integer"), "reply": nullable("object"),
                "interrupts": {"type": "array", "items": {"$ref": "#/components/schemas/Interrupt"}},
                "steps": {"type": "integer"}
            }
        },
        "State": {
            "type": "object", "required": ["conversation_id", "checkpoint_id", "values"],
            "properties": {"conversation_id": {"type": "string"}, "checkpoint_id": nullable("integer"),
                "values": {"type": "object"}}
        },
        "Checkpoint": {
            "type": "object",
            "required": ["id", "parent", "run_id", "step", "created_at_ms", "snapshot", "next", "bytes"],
            "properties": {
                "id": {"type": "integer"}, "parent": nullable("integer"), "run_id": {"type": "string"},
                "step": {"type": "integer"}, "created_at_ms": {"type": "integer"}, "snapshot": {"type": "boolean"},
                "next": {"type": "array", "items": {"type": "string"}}, "bytes": {"type": "integer"}
            }
        },
        "History": {
            "type": "object", "required": ["items", "next_before"],
            "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Checkpoint"}},
                "next_before": nullable("integer")}
        },
        "ForkRequest": {
            "type": "object", "required": ["checkpoint_id"], "additionalProperties": false,
            "properties": {"checkpoint_id": {"type": "integer", "minimum": 0}}
        },
        "ForkResult": {
            "type": "object", "required": ["conversation_id", "checkpoint_id", "forked_from"],
            "properties": {"conversation_id": {"type": "string"}, "checkpoint_id": {"type": "integer"},
                "forked_from": {"type": "integer"}}
        },
        "InterruptList": {
            "type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Interrupt"}}}
        },
        "Resume": {
            "type": "object", "required": ["value"], "additionalProperties": false, "properties": {"value": {}}
        },
        "Run": {
            "type": "object",
            "required": ["id", "conversation_id", "kind", "status", "result", "error", "created_at_ms", "finished_at_ms"],
            "properties": {
                "id": {"type": "string"}, "conversation_id": {"type": "string"},
                "kind": {"type": "string", "enum": ["message", "resume"]}, "status": {"type": "string"},
                "result": {"anyOf": [{"$ref": "#/components/schemas/TurnResult"}, {"type": "null"}]},
                "error": nullable("string"), "created_at_ms": {"type": "integer"}, "finished_at_ms": nullable("integer")
            }
        },
        "Cancelling": {
            "type": "object", "required": ["id", "cancelling"],
            "properties": {"id": {"type": "string"}, "cancelling": {"type": "boolean"}}
        },
        "FeedbackRequest": {
            "type": "object", "required": ["rating"], "additionalProperties": false,
            "properties": {"message_id": nullable("string"), "rating": {"type": "integer", "minimum": -1, "maximum": 5},
                "comment": {"type": ["string", "null"], "maxLength": 1000}}
        },
        "Feedback": {
            "type": "object",
            "required": ["id", "conversation_id", "message_id", "rating", "comment", "created_at_ms"],
            "properties": {"id": {"type": "string"}, "conversation_id": {"type": "string"},
                "message_id": nullable("string"), "rating": {"type": "integer"}, "comment": nullable("string"),
                "created_at_ms": {"type": "integer"}}
        }
    })
}

/// One SSE event as a client sees it (`data` is a JSON document in a string).
fn sse_event() -> Value {
    json!({"type": "object", "required": ["data"],
        "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"}}})
}

fn json_content(schema: &str) -> Value {
    json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}})
}

/// One operation: method, summary, whether it needs auth, parameters, body schema, success
/// status and schema (`None`: an SSE stream).
struct Op<'a> {
    method: &'a str,
    id: &'a str,
    summary: &'a str,
    auth: bool,
    params: Vec<Value>,
    body: Option<&'a str>,
    ok: (u16, Option<&'a str>),
    errors: &'a [u16],
}

const ERRORS: &[u16] = &[400, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503];
const OPEN_ERRORS: &[u16] = &[503];

fn path_id() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}})
}

fn query(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema})
}

fn last_event_id() -> Value {
    json!({"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "string"},
        "description": "`<run_id>:<seq>` of the last event received: the stream resumes after it"})
}

fn idempotency_key() -> Value {
    json!({"name": "Idempotency-Key", "in": "header", "required": false,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": "the same key and body replay the stored result; another body is 422; a concurrent duplicate is 409"})
}

fn operation(op: &Op<'_>) -> Value {
    let mut responses = Map::new();
    let (status, schema) = op.ok;
    let ok = match schema {
        Some(s) if op.id == "postMessage" || op.id == "resumeInterrupt" => json!({
            "description": "the turn's result, or its events as SSE with `Accept: text/event-stream`",
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}},
                "text/event-stream": {"schema": sse_event()}}
        }),
        Some("__text") => json!({"description": "success", "content": {"text/plain": {"schema": {"type": "string"}}}}),
        Some(s) => json!({"description": "success", "content": json_content(s)}),
        None => {
            json!({"description": "the run's events as SSE", "content": {"text/event-stream": {"schema": sse_event()}}})
        }
    };
    responses.insert(status.to_string(), ok);
    for e in op.errors {
        responses.insert(e.to_string(), json!({"description": "error", "content": json_content("Error")}));
    }
    let mut v = json!({"operationId": op.id, "summary": op.summary, "parameters": op.params, "responses": responses});
    if let Some(b) = op.body {
        v["requestBody"] = json!({"required": true, "content": json_content(b)});
    }
    v["security"] = if op.auth { json!([{"bearer": []}]) } else { json!([]) };
    v
}

/// The OpenAPI document for this state's assistants.
pub(crate) fn document(state: &AppState) -> Value {
    let assistants: Vec<String> = state.inner.assistants.iter().map(|(n, _)| n.clone()).collect();
    let page = json!({"type": "integer", "minimum": 1, "maximum": 100});
    let routes: Vec<(&str, Vec<Op<'_>>)> = vec![
        (
            "/healthz",
            vec![Op {
                method: "get",
                id: "healthz",
                summary: "process is up",
                auth: false,
                params: vec![],
                body: None,
                ok: (200, Some("Status")),
                errors: &[],
            }],
        ),
        (
            "/readyz",
            vec![Op {
                method: "get",
                id: "readyz",
                summary: "store reachable",
                auth: false,
                params: vec![],
                body: None,
                ok: (200, Some("Status")),
                errors: OPEN_ERRORS,
            }],
        ),
        (
            "/v1/assistants",
            vec![Op {
                method: "get",
                id: "listAssistants",
                summary: "list assistants",
                auth: true,
                params: vec![],
                body: None,
                ok: (200, Some("AssistantList")),
                errors: ERRORS,
            }],
        ),
        (
            "/v1/assistants/{id}",
            vec![Op {
                method: "get",
                id: "getAssistant",
                summary: "an assistant with its graph",
                auth: true,
                params: vec![path_id()],
                body: None,
                ok: (200, Some("Assistant")),
                errors: ERRORS,
            }],
        ),
        (
            "/metrics",
            vec![Op {
                method: "get",
                id: "metrics",
                summary: "Prometheus text metrics",
                auth: false,
                params: vec![],
                body: None,
                ok: (200, Some("__text")),
                errors: &[],
            }],
        ),
        (
            "/v1/conversations",
            vec![
                Op {
                    method: "post",
                    id: "createConversation",
                    summary: "create a conversation",
                    auth: true,
                    params: vec![],
                    body: Some("CreateConversation"),
                    ok: (201, Some("Conversation")),
                    errors: ERRORS,
                },
                Op {
                    method: "get",
                    id: "listConversations",
                    summary: "list conversations, newest first",
                    auth: true,
                    params: vec![
                        query("customer_id", json!({"type": "string"})),
                        query(
                            "status",
                            json!({"type": "string", "enum": ["idle", "running", "interrupted", "failed"]}),
                        ),
                        query("created_after_ms", json!({"type": "integer"})),
                        query("created_before_ms", json!({"type": "integer"})),
                        query("cursor", json!({"type": "string"})),
                        query("limit", page.clone()),
                    ],
                    body: None,
                    ok: (200, Some("ConversationList")),
                    errors: ERRORS,
                },
            ],
        ),
        (
            "/v1/conversations/{id}",
            vec![
                Op {
                    method: "get",
                    id: "getConversation",
                    summary: "a conversation",
                    auth: true,
                    params: vec![path_id()],
                    body: None,
                    ok: (200, Some("Conversation")),
                    errors: ERRORS,
                },
                Op {
                    method: "delete",
                    id: "deleteConversation",
                    summary: "erase a conversation; returns what was deleted",
                    auth: true,
                    params: vec![path_id()],
                    body: None,
                    ok: (200, Some("Deleted")),
                    errors: ERRORS,
                },
            ],
        ),
        (
            "/v1/conversations/{id}/messages",
            vec![Op {
                method: "post",
                id: "postMessage",
                summary: "run a turn (JSON: its result, with `Server-Timing: engine;dur=MS`; with `Accept: text/event-stream`: its events)",
                auth: true,
                params: vec![path_id(), last_event_id(), idempotency_key()],
                body: Some("Message"),
                ok: (200, Some("TurnResult")),
                errors: ERRORS,
            }],
        ),
        (
            "/v1/conversations/{id}/state",
            vec![Op {
                method: "get",
                id: "getState",
                summary: "current state",
                auth: true,
                params: vec![path_id()],
                body: None,
                ok: (200, Some("State")),
                errors: ERRORS,
            }],
        ),
        (
            "/v1/conversations/{id}/history",
            vec![Op {
                method: "get",
                id: "getHistory",
                summary: "checkpoints, newest first",
                auth: true,
                params: vec![
                    path_id(),
                    query("before", json!({"type": "integer", "minimum": 0})),
                    query("limit", page),
                ],
                body: None,
                ok: (200, Some("History")),
                errors: ERRORS,
            }],
        ),
        (
            "/v1/conversations/{id}/fork",
            vec![Op {
                method: "post",
                id: "fork",
                summary: "fork from a checkpoint",
                auth: true,
                params: vec![path_id()],
                body: Some("ForkRequest"),
                ok: (200, Some("ForkResult")),
                errors: ERRORS,
            }],
        ),
        (
            "/v1/conversations/{id}/interrupts",
            vec![Op {
                method: "get",
                id: "listInterrupts",
                summary: "pending interrupts",
                auth: true,
                params: vec![path_id()],
                body: None,
                ok: (200, Some("InterruptList")),
                errors: ERRORS,
            }],
        ),
        (
            "/v1/conversations/{id}/interrupts/resume",
            vec![Op {
                method: "post",
                id: "resumeInterrupt",
                summary: "resume with a value",
                auth: true,
                params: vec![path_id()],
                body: Some("Resume"),
                ok: (200, Some("TurnResult")),
                errors: ERRORS,
            }],
        ),
        (
            "/v1/conversations/{id}/feedback",
            vec![Op {
                method: "post",
                id: "postFeedback",
                summary: "rate a message",
                auth: true,
                params: vec![path_id()],
                body: Some("FeedbackRequest"),
                ok: (201, Some("Feedback")),
                errors: ERRORS,
            }],
        ),
        (
            "/v1/customers/{customer_id}",
            vec![Op {
                method: "delete",
                id: "eraseCustomer",
                summary: "erase every conversation of one customer (right to erasure; admin scope); recorded in the audit log",
                auth: true,
                params: vec![json!({"name": "customer_id", "in": "path", "required": true,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 256}})],
                body: None,
                ok: (200, Some("CustomerErasure")),
                errors: ERRORS,
            }],
        ),
        (
            "/v1/runs/{id}",
            vec![Op {
                method: "get",
                id: "getRun",
                summary: "a run",
                auth: true,
                params: vec![path_id()],
                body: None,
                ok: (200, Some("Run")),
                errors: ERRORS,
            }],
        ),
        (
            "/v1/runs/{id}/cancel",
            vec![Op {
                method: "post",
                id: "cancelRun",
                summary: "cancel a run in flight",
                auth: true,
                params: vec![path_id()],
                body: None,
                ok: (202, Some("Cancelling")),
                errors: ERRORS,
            }],
        ),
        (
            "/v1/runs/{id}/events",
            vec![Op {
                method: "get",
                id: "runEvents",
                summary: "a run's events (SSE, resumable)",
                auth: true,
                params: vec![path_id(), last_event_id()],
                body: None,
                ok: (200, None),
                errors: ERRORS,
            }],
        ),
    ];
    let mut paths = Map::new();
    for (path, ops) in &routes {
        let mut item = Map::new();
        for op in ops {
            item.insert(op.method.to_string(), operation(op));
        }
        paths.insert(path.to_string(), Value::Object(item));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Switchboard API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "schemas": schemas(assistants),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "an API key `sb_...`, or (when the server is configured for it) a JWT signed with RS256 or ES256"}}
        }
    })
}
