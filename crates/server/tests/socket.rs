//! Over a real socket: SSE streaming, reconnect with `Last-Event-ID` without gaps, graceful
//! shutdown with a turn in flight.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use switchboard_server::Limits;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One SSE event as read from the wire.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    if !body.is_empty() {
        req.push_str("content-type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).await.unwrap();
    BufReader::new(s)
}

/// Reads the status line and headers; returns the status.
async fn head(r: &mut BufReader<TcpStream>) -> u16 {
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            return status;
        }
    }
}

/// Reads up to `max` SSE events (skipping chunk-size lines and keep-alive comments).
async fn events(r: &mut BufReader<TcpStream>, max: usize) -> Vec<Sse> {
    let mut out = Vec::new();
    let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
    let mut line = String::new();
    while out.len() < max {
        line.clear();
        if r.read_line(&mut line).await.unwrap() == 0 {
            break;
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if let Some(v) = l.strip_prefix("id:") {
            id = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = l.strip_prefix("data:") {
            data.push_str(v.trim());
        } else if l.is_empty() && !event.is_empty() {
            out.push(Sse { id: id.clone(), event: event.clone(), data: serde_json::from_str(&data).unwrap() });
            event.clear();
            data.clear();
        }
    }
    out
}

async fn body_json(r: &mut BufReader<TcpStream>) -> Value {
    use tokio::io::AsyncReadExt;
    let mut s = String::new();
    r.read_to_string(&mut s).await.unwrap();
    // Chunked or not: the JSON object is between the first '{' and the last '}'.
    let (a, b) = (s.find('{').unwrap(), s.rfind('}').unwrap());
    serde_json::from_str(&s[a..=b]).unwrap()
}

fn seq(e: &Sse) -> u64 {
    e.id.rsplit_once(':').unwrap().1.parse().unwrap()
}

async fn serve(
    env: &Env,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchboard_server::run(listener, env.state.clone(), async move {
        let _ = rx.await;
    }));
    (addr, tx, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_after_a_reconnect_without_gaps() {
    let env = setup_with(Limits::default(), Duration::from_millis(300)).await;
    let (addr, _stop, _server) = serve(&env).await;
    let auth = format!("Bearer {}", env.a);
    let mut r = request(addr, "POST", "/v1/conversations", &[("authorization", &auth)], Some(&json!({}))).await;
    assert_eq!(head(&mut r).await, 201);
    let conv = body_json(&mut r).await["id"].as_str().unwrap().to_string();
    let path = format!("/v1/conversations/{conv}/messages");
    let sse = [("authorization", auth.as_str()), ("accept", "text/event-stream")];

    let mut r = request(addr, "POST", &path, &sse, Some(&json!({"text": "slow one"}))).await;
    assert_eq!(head(&mut r).await, 200);
    let first = events(&mut r, 1).await;
    assert_eq!(first.len(), 1);
    drop(r); // the client goes away mid-turn

    let last = first.last().unwrap().id.clone();
    let with_id = [sse[0], sse[1], ("last-event-id", last.as_str())];
    let mut r = request(addr, "POST", &path, &with_id, Some(&json!({"text": "ignored on reconnect"}))).await;
    assert_eq!(head(&mut r).await, 200);
    let rest = events(&mut r, 1000).await;
    assert_eq!(rest.last().unwrap().event, "result", "{rest:?}");
    assert_eq!(rest.last().unwrap().data["reply"]["text"], "echo: slow one");
    let all: Vec<Sse> = first.iter().chain(&rest).cloned().collect();
    let seqs: Vec<u64> = all.iter().map(seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>(), "no gap, no duplicate");
    assert!(all.iter().any(|e| e.event == "update" && e.data["node"] == "second"), "{all:?}");

    // The whole stream replays from the store once the run is over.
    let run = all[0].id.rsplit_once(':').unwrap().0.to_string();
    let mut r = request(addr, "GET", &format!("/v1/runs/{run}/events"), &sse, None).await;
    assert_eq!(head(&mut r).await, 200);
    assert_eq!(events(&mut r, 1000).await, all);
    // And from the middle.
    let mid = format!("{run}:2");
    let mut r =
        request(addr, "GET", &format!("/v1/runs/{run}/events"), &[sse[0], ("last-event-id", mid.as_str())], None).await;
    assert_eq!(head(&mut r).await, 200);
    assert_eq!(events(&mut r, 1000).await, all[2..].to_vec());
    // Only one turn ran: the reconnect did not start another.
    let mut r = request(addr, "GET", &format!("/v1/conversations/{conv}/state"), &[sse[0]], None).await;
    assert_eq!(head(&mut r).await, 200);
    assert_eq!(body_json(&mut r).await["values"]["turns"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_turn_in_flight_finish_and_refuses_new_connections() {
    let env = setup_with(
        Limits { shutdown_deadline: Duration::from_secs(5), ..Limits::default() },
        Duration::from_millis(300),
    )
    .await;
    let (addr, stop, server) = serve(&env).await;
    let auth = format!("Bearer {}", env.a);
    let mut r = request(addr, "POST", "/v1/conversations", &[("authorization", &auth)], Some(&json!({}))).await;
    assert_eq!(head(&mut r).await, 201);
    let conv = body_json(&mut r).await["id"].as_str().unwrap().to_string();
    let mut inflight = request(
        addr,
        "POST",
        &format!("/v1/conversations/{conv}/messages"),
        &[("authorization", &auth)],
        Some(&json!({"text": "slow"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.send(()).unwrap();
    assert_eq!(head(&mut inflight).await, 200);
    let v = body_json(&mut inflight).await;
    assert_eq!(v["status"], "completed", "{v}");
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops").unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_a_turn_past_the_deadline_keeping_its_checkpoints() {
    let env = setup_with(
        Limits { shutdown_deadline: Duration::from_millis(200), ..Limits::default() },
        Duration::from_millis(1500),
    )
    .await;
    let (addr, stop, server) = serve(&env).await;
    let auth = format!("Bearer {}", env.a);
    let mut r = request(addr, "POST", "/v1/conversations", &[("authorization", &auth)], Some(&json!({}))).await;
    assert_eq!(head(&mut r).await, 201);
    let conv = body_json(&mut r).await["id"].as_str().unwrap().to_string();
    let mut inflight = request(
        addr,
        "POST",
        &format!("/v1/conversations/{conv}/messages"),
        &[("authorization", &auth)],
        Some(&json!({"text": "slow"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    assert_eq!(head(&mut inflight).await, 200);
    let v = body_json(&mut inflight).await;
    assert_eq!(v["status"], "cancelled", "{v}");
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops").unwrap().unwrap();
    let rec = env.state.records().run("acme", v["run_id"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(rec.status, "cancelled");
}
