//! Checking that a delivery comes from the forge: the signature (or token) against the secret.
//!
//! | forge | header | scheme |
//! |---|---|---|
//! | GitHub | `X-Hub-Signature-256` | `sha256=` + hex HMAC-SHA256 of the body |
//! | GitLab | `X-Gitlab-Token` | the secret itself |
//! | GitLab (signing token) | `webhook-id`, `webhook-timestamp`, `webhook-signature` | [Standard Webhooks]: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` |
//! | Gitea | `X-Gitea-Signature` | hex HMAC-SHA256 of the body |
//! | Forgejo | `X-Forgejo-Signature` (or `X-Gitea-Signature`) | hex HMAC-SHA256 of the body |
//!
//! Every comparison takes the same time whatever the bytes: MACs through
//! `hmac::Mac::verify_slice`, GitLab's token by comparing SHA-256 digests with `subtle`, which
//! hides its length too.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit as _, Mac as _};
use http::HeaderMap;
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{Forge, WebhookError};

type HmacSha256 = Hmac<Sha256>;

/// How far a Standard Webhooks `webhook-timestamp` may be from now (either way): 5 minutes,
/// the specification's recommendation.
pub const STANDARD_WEBHOOKS_TOLERANCE: SignedDuration = SignedDuration::from_secs(5 * 60);

/// Checks the delivery's signature against `secret`, with the clock's time for Standard
/// Webhooks timestamps. See [`verify_at`].
pub fn verify(
    forge: Forge,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<(), WebhookError> {
    verify_at(forge, headers, body, secret, Timestamp::now())
}

/// Checks the delivery's signature against `secret`, taking `now` as the current time.
///
/// GitLab deliveries pass with either a matching `X-Gitlab-Token` or a Standard Webhooks
/// signature (GitLab's "signing token"); when both are sent, the signature decides, since it
/// also covers the body and the time. A Standard Webhooks secret may be given as
/// `whsec_<base64>`, in which case the key is the decoded bytes (as the specification says),
/// or as the raw secret.
pub fn verify_at(
    forge: Forge,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
    now: Timestamp,
) -> Result<(), WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::InvalidSecret {
            reason: "it is empty".into(),
        });
    }
    match forge {
        Forge::GitHub => {
            let header = "X-Hub-Signature-256";
            let value = signature_header(headers, header)?;
            let hex_digits =
                value
                    .strip_prefix("sha256=")
                    .ok_or_else(|| WebhookError::BadSignature {
                        header,
                        reason: "it must be `sha256=` followed by 64 hex digits".into(),
                    })?;
            check_hex_hmac(header, hex_digits, secret, body)
        }
        Forge::Gitea => {
            let header = "X-Gitea-Signature";
            let value = signature_header(headers, header)?;
            check_hex_hmac(header, value, secret, body)
        }
        Forge::Forgejo => {
            // Forgejo sends both; the Gitea header alone is enough (Forgejo's own may come
            // behind a proxy that only passes Gitea's).
            let (header, value) = match signature_header(headers, "X-Forgejo-Signature") {
                Ok(value) => ("X-Forgejo-Signature", value),
                Err(WebhookError::MissingSignature { .. })
                    if headers.contains_key("X-Gitea-Signature") =>
                {
                    (
                        "X-Gitea-Signature",
                        signature_header(headers, "X-Gitea-Signature")?,
                    )
                }
                Err(error) => return Err(error),
            };
            check_hex_hmac(header, value, secret, body)
        }
        Forge::GitLab => {
            if headers.contains_key("webhook-signature") {
                check_standard_webhooks(headers, body, secret, now)
            } else if headers.contains_key("X-Gitlab-Token") {
                let header = "X-Gitlab-Token";
                let token = headers
                    .get(header)
                    .map(|value| value.as_bytes())
                    .unwrap_or_default();
                // Comparing digests keeps the time independent of where the bytes differ and
                // of the secret's length.
                let matches: bool = Sha256::digest(token)
                    .as_slice()
                    .ct_eq(Sha256::digest(secret).as_slice())
                    .into();
                if matches {
                    Ok(())
                } else {
                    Err(WebhookError::BadSignature {
                        header,
                        reason: "the token is not the configured secret".into(),
                    })
                }
            } else {
                Err(WebhookError::MissingSignature {
                    header: "X-Gitlab-Token (or webhook-signature)",
                })
            }
        }
    }
}

/// A signature header's text, trimmed.
fn signature_header<'a>(
    headers: &'a HeaderMap,
    header: &'static str,
) -> Result<&'a str, WebhookError> {
    let value = headers
        .get(header)
        .ok_or(WebhookError::MissingSignature { header })?;
    let text = value.to_str().map_err(|_| WebhookError::BadSignature {
        header,
        reason: "it is not printable ASCII".into(),
    })?;
    Ok(text.trim())
}

fn mac(secret: &[u8]) -> Result<HmacSha256, WebhookError> {
    // HMAC takes keys of any length; the error cannot happen, but is not unwrapped.
    HmacSha256::new_from_slice(secret).map_err(|error| WebhookError::InvalidSecret {
        reason: error.to_string(),
    })
}

fn check_hex_hmac(
    header: &'static str,
    hex_digits: &str,
    secret: &[u8],
    body: &[u8],
) -> Result<(), WebhookError> {
    let expected = match hex::decode(hex_digits) {
        Ok(bytes) if bytes.len() == 32 => bytes,
        _ => {
            return Err(WebhookError::BadSignature {
                header,
                reason: "it must be 64 hex digits (an HMAC-SHA256)".into(),
            });
        }
    };
    let mut mac = mac(secret)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| WebhookError::BadSignature {
            header,
            reason: "it does not match the body signed with the configured secret".into(),
        })
}

/// The key of a Standard Webhooks secret: `whsec_<base64>` decoded, or the bytes as given.
fn standard_webhooks_key(secret: &[u8]) -> Result<Vec<u8>, WebhookError> {
    match secret.strip_prefix(b"whsec_") {
        Some(encoded) => {
            let key = BASE64
                .decode(encoded)
                .map_err(|error| WebhookError::InvalidSecret {
                    reason: format!("it starts with `whsec_` but the rest is not base64: {error}"),
                })?;
            if key.is_empty() {
                return Err(WebhookError::InvalidSecret {
                    reason: "it is `whsec_` with nothing after it".into(),
                });
            }
            Ok(key)
        }
        None => Ok(secret.to_vec()),
    }
}

fn check_standard_webhooks(
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
    now: Timestamp,
) -> Result<(), WebhookError> {
    let id = signature_header(headers, "webhook-id")?;
    let timestamp_text = signature_header(headers, "webhook-timestamp")?;
    let signatures = signature_header(headers, "webhook-signature")?;
    let timestamp: i64 = timestamp_text
        .parse()
        .map_err(|_| WebhookError::BadSignature {
            header: "webhook-timestamp",
            reason: "it must be whole seconds since 1970".into(),
        })?;

    let key = standard_webhooks_key(secret)?;
    let mut mac = mac(&key)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_text.as_bytes());
    mac.update(b".");
    mac.update(body);

    let mut saw_v1 = false;
    let mut matched = false;
    for entry in signatures.split_whitespace() {
        let Some(encoded) = entry.strip_prefix("v1,") else {
            // Other schemes (`v1a,` asymmetric) are not ours to check.
            continue;
        };
        saw_v1 = true;
        let Ok(candidate) = BASE64.decode(encoded) else {
            continue;
        };
        // Every candidate is checked, in constant time each, so the time does not tell
        // which one matched.
        if mac.clone().verify_slice(&candidate).is_ok() {
            matched = true;
        }
    }
    if !saw_v1 {
        return Err(WebhookError::BadSignature {
            header: "webhook-signature",
            reason: "it has no `v1,<base64>` entry".into(),
        });
    }
    if !matched {
        return Err(WebhookError::BadSignature {
            header: "webhook-signature",
            reason: "no `v1` signature matches the delivery signed with the configured secret"
                .into(),
        });
    }

    let skew_seconds = timestamp.saturating_sub(now.as_second());
    let tolerance_seconds = STANDARD_WEBHOOKS_TOLERANCE.as_secs();
    if skew_seconds.unsigned_abs() > tolerance_seconds.unsigned_abs() {
        return Err(WebhookError::StaleTimestamp {
            skew_seconds,
            tolerance_seconds,
        });
    }
    Ok(())
}
