//! Job logs for people: the whole log as text, or followed live as Server-Sent Events
//! (`?follow=true`): one event per stored chunk with its number as the event id (so a client
//! that reconnects with `Last-Event-ID` resumes where it was), an `attempt` event when the job
//! starts over on another agent, and an `end` event with the job's status.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use sorat_state::{Job, Role};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// The query of the logs endpoint.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// Follow the log live (SSE) until the job ends.
    #[serde(default)]
    pub follow: bool,
    /// Only chunks after this number.
    #[serde(default)]
    pub after: Option<i64>,
    /// Which attempt (default: the latest).
    #[serde(default)]
    pub attempt: Option<i64>,
}

/// Finds a run's job by its key (its id in the pipeline) or its numeric id.
pub async fn find_job(state: &Arc<AppState>, run_id: i64, job: &str) -> ApiResult<Job> {
    let jobs = state.store.jobs(run_id).await?;
    jobs.into_iter()
        .find(|candidate| candidate.key == job || candidate.id.to_string() == job)
        .ok_or_else(|| ApiError::not_found(format!("job `{job}` in run {run_id}")))
}

/// `GET /api/v1/runs/{id}/jobs/{job}/logs`.
pub async fn job_logs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((run_id, job)): Path<(i64, String)>,
    Query(query): Query<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let run = state
        .store
        .run(run_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run_id}")))?;
    caller
        .require(&state.store, Some(&run.project), Role::Viewer)
        .await?;
    let job = find_job(&state, run_id, &job).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<i64>().ok());
    let after = resume.or(query.after).unwrap_or(0);
    if !query.follow {
        let mut text = String::new();
        let mut after = after;
        loop {
            let chunks = state
                .store
                .log_chunks(job.id, query.attempt, after, 500)
                .await?;
            let Some(last) = chunks.last() else { break };
            after = last.seq;
            for chunk in &chunks {
                text.push_str(&chunk.text);
            }
        }
        return Ok(([("content-type", "text/plain; charset=utf-8")], text).into_response());
    }
    let stream = follow(state, job.id, query.attempt, after);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn follow(
    state: Arc<AppState>,
    job_id: i64,
    fixed_attempt: Option<i64>,
    after: i64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    async_stream(move |sender| async move {
        let mut events = state.job_events.subscribe();
        let mut after = after;
        let mut attempt: Option<i64> = fixed_attempt;
        loop {
            let Ok(Some(job)) = state.store.job(job_id).await else {
                let _ = sender
                    .send(Event::default().event("error").data("the job is gone"))
                    .await;
                return;
            };
            let current = fixed_attempt.unwrap_or(job.attempt);
            // A new attempt after one that ran (not the first start of a queued job).
            if attempt.is_some_and(|seen| seen >= 1 && seen != current) {
                after = 0;
                let _ = sender
                    .send(Event::default().event("attempt").data(current.to_string()))
                    .await;
            }
            attempt = Some(current);
            let chunks = match state
                .store
                .log_chunks(job_id, Some(current), after, 200)
                .await
            {
                Ok(chunks) => chunks,
                Err(error) => {
                    let _ = sender
                        .send(Event::default().event("error").data(error.to_string()))
                        .await;
                    return;
                }
            };
            if !chunks.is_empty() {
                for chunk in chunks {
                    after = chunk.seq;
                    let text = chunk.text.strip_suffix('\n').unwrap_or(&chunk.text);
                    let event = Event::default().id(chunk.seq.to_string()).data(text);
                    if sender.send(event).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            if job.status.is_terminal() {
                let _ = sender
                    .send(Event::default().event("end").data(job.status.as_str()))
                    .await;
                return;
            }
            // Wait for news of this job, or look again in a second (a missed wake-up costs
            // at most that).
            let wait = async {
                loop {
                    match events.recv().await {
                        Ok(id) if id == job_id => return,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            };
            tokio::select! {
                () = wait => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    })
}

/// A stream fed by a task through a small channel; the task ends when the client goes.
fn async_stream<F, Fut>(producer: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(producer(sender));
    futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(receiver), Ok)
}
