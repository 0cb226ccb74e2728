//! Commit statuses back to the forge, in the shape of GitHub's commit status API
//! (`POST {api}/repos/{owner}/{name}/statuses/{sha}`), which Gitea and Forgejo accept too.
//! Sent in the background, a few attempts each; a forge that is down never holds a run up.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sorat_state::{Run, RunStatus};

use crate::AppState;

/// Reports the run's state when its project has `status:` configured.
pub fn report(state: &Arc<AppState>, run: &Run) {
    let Some(project) = state.projects.get(&run.project) else {
        return;
    };
    let Some(config) = project.status.clone() else {
        return;
    };
    let (forge_state, description) = match run.status {
        RunStatus::Queued => ("pending", "queued"),
        RunStatus::Running => ("pending", "running"),
        RunStatus::Success => ("success", "passed"),
        RunStatus::Failure => ("failure", "failed"),
        RunStatus::Cancelled => ("error", "cancelled"),
    };
    let body = json!({
        "state": forge_state,
        "target_url": format!("{}/api/v1/runs/{}", state.config.server.external_url, run.id),
        "description": format!("Sorat run #{} {description}", run.number),
        "context": format!("sorat/{}", run.project),
    });
    let url = format!(
        "{}/repos/{}/statuses/{}",
        config.api, config.repository, run.sha
    );
    let state = Arc::clone(state);
    let project = run.project.clone();
    tokio::spawn(async move {
        let token = match state.store.secret(Some(&project), &config.token.name).await {
            Ok(Some(token)) => token,
            _ => match state.store.secret(None, &config.token.name).await {
                Ok(Some(token)) => token,
                _ => {
                    tracing::warn!(%project, secret = %config.token.name, "commit status: the token secret is not set");
                    return;
                }
            },
        };
        for attempt in 1..=3u32 {
            let sent = state
                .http
                .post(&url)
                .bearer_auth(&token)
                .header("Accept", "application/vnd.github+json")
                .header("User-Agent", "sorat")
                .timeout(Duration::from_secs(10))
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => {
                    tracing::warn!(%url, status = %response.status(), attempt, "commit status refused");
                    if response.status().is_client_error() {
                        return;
                    }
                }
                Err(error) => tracing::warn!(%url, %error, attempt, "commit status failed"),
            }
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
    });
}
