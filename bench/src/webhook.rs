//! GitHub push webhooks as GitHub sends them: the JSON payload of a push and its
//! `X-Hub-Signature-256` (HMAC-SHA256 of the body with the hook's secret).

use hmac::{KeyInit, Mac};
use serde_json::json;

/// The `X-Hub-Signature-256` header value for `body`: `sha256=<hex>`.
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail; an empty key is still a key.
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The body of a GitHub `push` event of `git_ref` from `before` to `after`, touching `files`.
pub fn github_push(git_ref: &str, before: &str, after: &str, files: &[&str]) -> Vec<u8> {
    let commit = json!({
        "id": after,
        "message": "a change\n\nfor the benchmark",
        "timestamp": "2026-11-26T00:00:00Z",
        "author": { "name": "Bench", "email": "bench@example.com", "username": "bench" },
        "committer": { "name": "Bench", "email": "bench@example.com", "username": "bench" },
        "added": [],
        "removed": [],
        "modified": files,
    });
    let payload = json!({
        "ref": git_ref,
        "before": before,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "compare": "https://example.com/compare",
        "commits": [commit.clone()],
        "head_commit": commit,
        "repository": {
            "id": 1,
            "name": "bench",
            "full_name": "team/bench",
            "clone_url": "https://example.com/team/bench.git",
            "html_url": "https://example.com/team/bench",
            "default_branch": "main",
            "owner": { "login": "team", "name": "team" },
        },
        "pusher": { "name": "bench", "email": "bench@example.com" },
        "sender": { "login": "bench", "id": 7 },
    });
    payload.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_githubs_example() {
        // GitHub's documented example ("Validating webhook deliveries").
        let signature = github_signature(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            signature,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
