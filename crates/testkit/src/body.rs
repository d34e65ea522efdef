//! Paced, fault-injecting response bodies shared by every fake.
//!
//! A vendor module renders its reply as a list of frames (SSE events, binary event-stream
//! frames, ...); [`stream_body`] sends them with the scenario's pacing and fault.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;

/// What goes wrong in a stream, after how many frames.
#[derive(Debug, Clone)]
pub enum StreamFault {
    /// Stop sending and keep the connection open.
    Stall {
        /// Frames sent first.
        after: usize,
    },
    /// Abort the connection.
    Disconnect {
        /// Frames sent first.
        after: usize,
    },
    /// End the body cleanly, dropping the remaining frames (and the terminator).
    Truncate {
        /// Frames sent first.
        after: usize,
    },
    /// Send this frame, then end the body.
    Inject {
        /// Frames sent first.
        after: usize,
        /// The frame to send (a malformed chunk or a vendor error event).
        frame: Bytes,
    },
}

/// How to send a list of frames.
#[derive(Debug, Clone, Default)]
pub struct StreamPlan {
    /// The frames, in order, terminator included.
    pub frames: Vec<Bytes>,
    /// Delay before each frame after the first.
    pub frame_delay: Duration,
    /// Split every frame in two writes.
    pub split_writes: bool,
    /// Sent before every frame (an SSE comment or vendor ping).
    pub keepalive: Option<Bytes>,
    /// The fault, if any.
    pub fault: Option<StreamFault>,
}

/// The error that makes hyper abort a connection mid-body.
#[derive(Debug, thiserror::Error)]
#[error("fake disconnect")]
struct FakeDisconnect;

/// Builds a streaming body from a plan.
pub fn stream_body(plan: StreamPlan) -> Body {
    let stream = async_stream(plan);
    Body::from_stream(stream)
}

fn split_point(frame: &[u8]) -> usize {
    // Prefer cutting inside a multi-byte UTF-8 character, to exercise decoders.
    if let Some(i) = frame.iter().position(|b| *b >= 0xC0) {
        return i + 1;
    }
    frame.len() / 2
}

fn async_stream(
    plan: StreamPlan,
) -> impl futures::Stream<Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>> + Send {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Box<dyn std::error::Error + Send + Sync>>>(4);
    tokio::spawn(async move {
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move { tx.send(Ok(b)).await.is_ok() }
        };
        for (i, frame) in plan.frames.iter().enumerate() {
            match &plan.fault {
                Some(StreamFault::Stall { after }) if *after == i => {
                    // Hold the connection open until the client goes away.
                    tx.closed().await;
                    return;
                }
                Some(StreamFault::Disconnect { after }) if *after == i => {
                    let _ = tx.send(Err(Box::new(FakeDisconnect))).await;
                    return;
                }
                Some(StreamFault::Truncate { after }) if *after == i => return,
                Some(StreamFault::Inject { after, frame }) if *after == i => {
                    let _ = send(frame.clone()).await;
                    return;
                }
                _ => {}
            }
            if i > 0 && !plan.frame_delay.is_zero() {
                tokio::time::sleep(plan.frame_delay).await;
            }
            if let Some(k) = &plan.keepalive
                && !send(k.clone()).await
            {
                return;
            }
            if plan.split_writes && frame.len() > 1 {
                let at = split_point(frame);
                if !send(frame.slice(..at)).await {
                    return;
                }
                tokio::task::yield_now().await;
                if !send(frame.slice(at..)).await {
                    return;
                }
            } else if !send(frame.clone()).await {
                return;
            }
        }
        // A fault placed after the last frame.
        match &plan.fault {
            Some(StreamFault::Stall { after }) if *after >= plan.frames.len() => tx.closed().await,
            Some(StreamFault::Disconnect { after }) if *after >= plan.frames.len() => {
                let _ = tx.send(Err(Box::new(FakeDisconnect))).await;
            }
            Some(StreamFault::Inject { after, frame }) if *after >= plan.frames.len() => {
                let _ = send(frame.clone()).await;
            }
            _ => {}
        }
    });
    tokio_stream_from(rx).map(|x| x)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A body that never completes (a stalled non-streamed answer).
pub fn never_body() -> Body {
    Body::from_stream(futures::stream::pending::<Result<Bytes, Infallible>>())
}
