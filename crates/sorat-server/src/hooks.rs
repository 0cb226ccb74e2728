//! `POST /hooks/{project}`: forge webhooks. The forge is told apart by its headers, the
//! signature checked in constant time against the project's webhook secret (401 and nothing
//! queued when it is bad or missing), the payload parsed (400 with the reason when it is
//! malformed), and `on:` decides whether a run starts.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sorat_trigger::webhook::{self, Parsed};

use crate::AppState;
use crate::dispatch::{self, Started, TriggerRequest};
use crate::error::{ApiError, ApiResult};

/// Receives one delivery.
pub async fn receive(
    State(state): State<Arc<AppState>>,
    Path(project_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let project = state
        .projects
        .get(&project_name)
        .ok_or_else(|| ApiError::not_found(format!("project `{project_name}`")))?
        .clone();
    let Some(secret_ref) = &project.webhook_secret else {
        return Err(ApiError::forbidden(format!(
            "project `{project_name}` takes no webhooks: it has no `webhook.secret`"
        )));
    };
    let secret = match state
        .store
        .secret(Some(&project_name), &secret_ref.name)
        .await?
    {
        Some(secret) => secret,
        None => state
            .store
            .secret(None, &secret_ref.name)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_configured",
                    format!(
                        "the webhook secret `{}` is not set; set it with `sorat secret set {} --project {project_name}`",
                        secret_ref.name, secret_ref.name
                    ),
                )
            })?,
    };
    let forge = webhook::detect(&headers).map_err(webhook_error)?;
    webhook::verify(forge, &headers, &body, secret.as_bytes()).map_err(webhook_error)?;
    let event = match webhook::parse(forge, &headers, &body).map_err(webhook_error)? {
        Parsed::Ping => return Ok(Json(json!({ "pong": true })).into_response()),
        Parsed::Ignored(why) => {
            return Ok(Json(json!({ "started": false, "reason": why })).into_response());
        }
        Parsed::Event(event) => event,
    };
    let actor = event
        .author
        .as_ref()
        .and_then(|author| author.login.clone().or_else(|| author.name.clone()))
        .or_else(|| event.sender.clone())
        .unwrap_or_else(|| forge.name().to_string());
    let title = match &event.pull_request {
        Some(pull_request) => pull_request.title.clone(),
        None => event
            .message
            .as_deref()
            .and_then(|message| message.lines().next())
            .unwrap_or_default()
            .to_string(),
    };
    let sha = match &event.pull_request {
        Some(pull_request) => pull_request.head_sha.clone(),
        None => event.sha.clone(),
    };
    if event.deleted {
        return Ok(Json(json!({
            "started": false,
            "reason": format!("`{}` was deleted, and a deletion starts no run", event.git_ref),
        }))
        .into_response());
    }
    let request = TriggerRequest {
        event: event.kind,
        git_ref: event.git_ref.clone(),
        sha: Some(sha),
        before: event.before.clone(),
        actor,
        title,
        changed_files: event.changed_files.clone(),
        base_branch: event
            .pull_request
            .as_ref()
            .map(|pull_request| pull_request.base_ref.clone())
            .unwrap_or_default(),
        inputs: Vec::new(),
        rerun: false,
        details: json!({
            "source": "webhook",
            "forge": forge.name(),
            "delivery": delivery_id(&headers),
            "pull_request": event.pull_request.as_ref().map(|pr| pr.number),
            "link": event.link,
        }),
        webhook: Some(event),
    };
    match dispatch::start_run(&state, &project, request).await? {
        Started::Run(run) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "started": true, "run": run.id, "number": run.number, "status": run.status })),
        )
            .into_response()),
        Started::Skipped(reason) => {
            Ok(Json(json!({ "started": false, "reason": reason })).into_response())
        }
    }
}

fn delivery_id(headers: &HeaderMap) -> Option<String> {
    [
        "X-GitHub-Delivery",
        "X-Gitea-Delivery",
        "X-Forgejo-Delivery",
        "X-Gitlab-Event-UUID",
        "webhook-id",
    ]
    .iter()
    .find_map(|name| headers.get(*name))
    .and_then(|value| value.to_str().ok())
    .map(str::to_string)
}

fn webhook_error(error: webhook::WebhookError) -> ApiError {
    let status = error.status();
    let code = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::BAD_REQUEST => "invalid",
        _ => "internal",
    };
    let field = match &error {
        webhook::WebhookError::MissingHeader { header }
        | webhook::WebhookError::InvalidHeader { header, .. }
        | webhook::WebhookError::MissingSignature { header }
        | webhook::WebhookError::BadSignature { header, .. } => Some(header.to_string()),
        webhook::WebhookError::MissingField { path }
        | webhook::WebhookError::InvalidField { path, .. }
        | webhook::WebhookError::WrongType { path, .. } => Some(path.clone()),
        _ => None,
    };
    ApiError {
        status,
        code,
        message: error.to_string(),
        field,
    }
}
