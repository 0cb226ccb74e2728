//! Who is calling: bearer tokens, looked up by their SHA-256 (the store never holds a
//! token), roles per project (viewer < developer < admin), agent tokens that can only claim
//! and report, and the first admin token.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sorat_state::{NewToken, Role, Store, TokenKind};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// The prefix of every token Sorat makes, so that secret scanners can recognise one.
pub const TOKEN_PREFIX: &str = "sorat_";

/// A new random token: the prefix and 32 random bytes in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// What the store keeps of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    let digest = Sha256::digest(token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&digest);
    hash
}

/// The authenticated caller of a request (an extension set by [`require_token`]).
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's id.
    pub token_id: i64,
    /// For the audit log: the user's or agent token's name.
    pub name: String,
    /// User or agent.
    pub kind: TokenKind,
    /// The user, for user tokens.
    pub user_id: Option<i64>,
}

impl Caller {
    /// Fails unless the caller is a user with at least `role` on `project` (or on every
    /// project when `None`).
    pub async fn require(&self, store: &Store, project: Option<&str>, role: Role) -> ApiResult<()> {
        let Some(user_id) = self.user_id.filter(|_| self.kind == TokenKind::User) else {
            return Err(ApiError::forbidden(
                "agent tokens can only claim jobs and report on them",
            ));
        };
        let has = store.role_of(user_id, project).await?;
        match has {
            Some(has) if has >= role => Ok(()),
            Some(has) => Err(ApiError::forbidden(format!(
                "this needs the {} role{}; the token's user is {}",
                role.as_str(),
                project
                    .map(|p| format!(" on project `{p}`"))
                    .unwrap_or_default(),
                has.as_str()
            ))),
            None => Err(ApiError::forbidden(format!(
                "the token's user has no role{}",
                project
                    .map(|p| format!(" on project `{p}`"))
                    .unwrap_or_default()
            ))),
        }
    }

    /// Fails unless the caller is an agent.
    pub fn require_agent(&self) -> ApiResult<()> {
        if self.kind == TokenKind::Agent {
            Ok(())
        } else {
            Err(ApiError::forbidden("this endpoint is for agent tokens"))
        }
    }
}

/// Middleware: every request must carry a usable bearer token; the caller goes into the
/// request's extensions.
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthorized("no `Authorization: Bearer <token>` header")
                .with_field("Authorization")
        })?
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
                .with_field("Authorization")
        })?
        .trim();
    let now = crate::now();
    let found = state.store.token_by_hash(&hash_token(token)).await?;
    let Some(found) = found.filter(|t| t.is_usable(now)) else {
        return Err(ApiError::unauthorized(
            "the token is unknown, revoked or expired",
        ));
    };
    // Touching every request would write on every read; once a minute is enough.
    if found.last_used_at.is_none_or(|at| now - at > 60_000) {
        state.store.touch_token(found.id, now).await?;
    }
    let caller = Caller {
        token_id: found.id,
        name: found.name.clone(),
        kind: found.kind,
        user_id: found.user_id,
    };
    request.extensions_mut().insert(caller.clone());
    let mut response = next.run(request).await;
    // For the audit log, which sees the response.
    response.extensions_mut().insert(caller);
    Ok(response)
}

impl ApiError {
    /// The same error, naming a field or header.
    pub fn with_field(mut self, field: &str) -> ApiError {
        self.field = Some(field.to_string());
        self
    }
}

/// Makes sure an admin exists. On the first start (no user `admin`), creates it with a token:
/// `SORAT_ADMIN_TOKEN` when given, else a new random one, written to `<data>/admin-token`
/// (mode 0600) and returned so the caller can show it once. With `SORAT_ADMIN_TOKEN` on a
/// later start, that token is made valid for the admin if it is not already.
pub async fn bootstrap_admin(
    store: &Store,
    data_dir: &Path,
    from_env: Option<&str>,
) -> ApiResult<Option<String>> {
    let now = crate::now();
    let admin = match store.user("admin").await? {
        Some(user) => {
            let Some(token) = from_env else {
                return Ok(None);
            };
            // Whatever happened to the admin's grants, the operator's token is admin again.
            store.grant(user.id, None, Role::Admin).await?;
            if store.token_by_hash(&hash_token(token)).await?.is_none() {
                store
                    .create_token(
                        &NewToken {
                            name: "admin (SORAT_ADMIN_TOKEN)".into(),
                            kind: TokenKind::User,
                            user_id: Some(user.id),
                            hash: hash_token(token),
                            expires_at: None,
                        },
                        now,
                    )
                    .await?;
            }
            return Ok(None);
        }
        None => store.create_user("admin", now).await?,
    };
    store.grant(admin.id, None, Role::Admin).await?;
    let token = match from_env {
        Some(token) => token.to_string(),
        None => new_token(),
    };
    store
        .create_token(
            &NewToken {
                name: "admin".into(),
                kind: TokenKind::User,
                user_id: Some(admin.id),
                hash: hash_token(&token),
                expires_at: None,
            },
            now,
        )
        .await?;
    if from_env.is_some() {
        return Ok(None);
    }
    write_private(&data_dir.join("admin-token"), &format!("{token}\n"))
        .map_err(|error| ApiError::internal(format!("writing admin-token: {error}")))?;
    Ok(Some(token))
}

/// Writes a file only its owner can read, durably.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// A fresh agent token for the agent inside `sorat up` (older ones of that name revoked).
pub async fn local_agent_token(store: &Store) -> ApiResult<String> {
    let now = crate::now();
    for token in store.tokens().await? {
        if token.name == "local-agent" && token.revoked_at.is_none() {
            store.revoke_token(token.id, now).await?;
        }
    }
    let token = new_token();
    store
        .create_token(
            &NewToken {
                name: "local-agent".into(),
                kind: TokenKind::Agent,
                user_id: None,
                hash: hash_token(&token),
                expires_at: None,
            },
            now,
        )
        .await?;
    Ok(token)
}
