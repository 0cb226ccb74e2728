//! Signature checks with real HMACs computed here: every forge's scheme, good and bad.

#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit as _, Mac as _};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use jiff::Timestamp;
use sha2::Sha256;
use sorat_trigger::webhook::{self, Forge, WebhookError};

const SECRET: &[u8] = b"It's a Secret to Everybody";
const BODY: &[u8] = b"{\"ref\":\"refs/heads/main\"}";

fn hmac_bytes(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn github_headers(signature: &str) -> HeaderMap {
    headers(&[
        ("X-GitHub-Event", "push"),
        ("X-Hub-Signature-256", signature),
    ])
}

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

#[test]
fn github_documented_example_verifies() {
    // The example from GitHub's "Validating webhook deliveries" page.
    let headers =
        github_headers("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
    webhook::verify(Forge::GitHub, &headers, b"Hello, World!", SECRET).unwrap();
}

#[test]
fn github_good_signature_passes() {
    let signature = format!("sha256={}", hex::encode(hmac_bytes(SECRET, &[BODY])));
    webhook::verify(Forge::GitHub, &github_headers(&signature), BODY, SECRET).unwrap();
}

#[test]
fn github_wrong_secret_is_a_bad_signature() {
    let signature = format!(
        "sha256={}",
        hex::encode(hmac_bytes(b"another secret", &[BODY]))
    );
    let error =
        webhook::verify(Forge::GitHub, &github_headers(&signature), BODY, SECRET).unwrap_err();
    assert!(matches!(
        error,
        WebhookError::BadSignature {
            header: "X-Hub-Signature-256",
            ..
        }
    ));
    assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    assert!(error.to_string().contains("does not match"), "{error}");
}

#[test]
fn github_tampered_body_is_a_bad_signature() {
    let signature = format!("sha256={}", hex::encode(hmac_bytes(SECRET, &[BODY])));
    let tampered = b"{\"ref\":\"refs/heads/evil\"}";
    let error =
        webhook::verify(Forge::GitHub, &github_headers(&signature), tampered, SECRET).unwrap_err();
    assert!(matches!(error, WebhookError::BadSignature { .. }));
}

#[test]
fn github_missing_signature_names_the_header() {
    let headers = headers(&[("X-GitHub-Event", "push")]);
    let error = webhook::verify(Forge::GitHub, &headers, BODY, SECRET).unwrap_err();
    assert_eq!(
        error,
        WebhookError::MissingSignature {
            header: "X-Hub-Signature-256"
        }
    );
    assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    assert!(error.to_string().contains("X-Hub-Signature-256"));
}

#[test]
fn github_malformed_signatures_are_bad_not_panics() {
    let good_hex = hex::encode(hmac_bytes(SECRET, &[BODY]));
    for malformed in [
        "sha256=zz".to_string(),
        "sha256=".to_string(),
        good_hex.clone(),                      // no prefix
        format!("sha1={good_hex}"),            // another algorithm
        format!("sha256={}", &good_hex[..62]), // short
        format!("sha256={good_hex}00"),        // long
        format!("sha256={}", &good_hex[..63]), // odd length
    ] {
        let error =
            webhook::verify(Forge::GitHub, &github_headers(&malformed), BODY, SECRET).unwrap_err();
        assert!(
            matches!(
                error,
                WebhookError::BadSignature {
                    header: "X-Hub-Signature-256",
                    ..
                }
            ),
            "{malformed}: {error:?}"
        );
    }
}

#[test]
fn github_uppercase_hex_is_accepted() {
    let signature = format!("sha256={}", hex::encode_upper(hmac_bytes(SECRET, &[BODY])));
    webhook::verify(Forge::GitHub, &github_headers(&signature), BODY, SECRET).unwrap();
}

#[test]
fn empty_secret_is_refused_before_anything_is_compared() {
    let signature = format!("sha256={}", hex::encode(hmac_bytes(b"", &[BODY])));
    let error = webhook::verify(Forge::GitHub, &github_headers(&signature), BODY, b"").unwrap_err();
    assert!(matches!(error, WebhookError::InvalidSecret { .. }));
    assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[test]
fn gitea_hex_signature_good_and_bad() {
    let good = hex::encode(hmac_bytes(SECRET, &[BODY]));
    let ok = headers(&[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &good)]);
    webhook::verify(Forge::Gitea, &ok, BODY, SECRET).unwrap();

    let bad = hex::encode(hmac_bytes(b"nope", &[BODY]));
    let wrong = headers(&[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &bad)]);
    let error = webhook::verify(Forge::Gitea, &wrong, BODY, SECRET).unwrap_err();
    assert!(matches!(
        error,
        WebhookError::BadSignature {
            header: "X-Gitea-Signature",
            ..
        }
    ));

    let missing = headers(&[("X-Gitea-Event", "push")]);
    assert_eq!(
        webhook::verify(Forge::Gitea, &missing, BODY, SECRET).unwrap_err(),
        WebhookError::MissingSignature {
            header: "X-Gitea-Signature"
        }
    );
}

#[test]
fn forgejo_prefers_its_own_header_and_falls_back_to_gitea_s() {
    let good = hex::encode(hmac_bytes(SECRET, &[BODY]));
    let bad = hex::encode(hmac_bytes(b"nope", &[BODY]));

    let own = headers(&[("X-Forgejo-Event", "push"), ("X-Forgejo-Signature", &good)]);
    webhook::verify(Forge::Forgejo, &own, BODY, SECRET).unwrap();

    let gitea_only = headers(&[("X-Forgejo-Event", "push"), ("X-Gitea-Signature", &good)]);
    webhook::verify(Forge::Forgejo, &gitea_only, BODY, SECRET).unwrap();

    // When both are there, Forgejo's decides: a good Gitea one does not save a bad Forgejo one.
    let both = headers(&[("X-Forgejo-Signature", &bad), ("X-Gitea-Signature", &good)]);
    let error = webhook::verify(Forge::Forgejo, &both, BODY, SECRET).unwrap_err();
    assert!(matches!(
        error,
        WebhookError::BadSignature {
            header: "X-Forgejo-Signature",
            ..
        }
    ));

    let none = headers(&[("X-Forgejo-Event", "push")]);
    assert_eq!(
        webhook::verify(Forge::Forgejo, &none, BODY, SECRET).unwrap_err(),
        WebhookError::MissingSignature {
            header: "X-Forgejo-Signature"
        }
    );
}

#[test]
fn gitlab_token_must_equal_the_secret() {
    let good = headers(&[
        ("X-Gitlab-Event", "Push Hook"),
        ("X-Gitlab-Token", "It's a Secret to Everybody"),
    ]);
    webhook::verify(Forge::GitLab, &good, BODY, SECRET).unwrap();

    for wrong in [
        "It's a Secret to Everybod",
        "It's a Secret to Everybody!",
        "",
        "x",
    ] {
        let headers = headers(&[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", wrong)]);
        let error = webhook::verify(Forge::GitLab, &headers, BODY, SECRET).unwrap_err();
        assert!(
            matches!(
                error,
                WebhookError::BadSignature {
                    header: "X-Gitlab-Token",
                    ..
                }
            ),
            "{wrong}: {error:?}"
        );
    }

    let missing = headers(&[("X-Gitlab-Event", "Push Hook")]);
    let error = webhook::verify(Forge::GitLab, &missing, BODY, SECRET).unwrap_err();
    assert!(matches!(error, WebhookError::MissingSignature { .. }));
    assert!(error.to_string().contains("X-Gitlab-Token"));
}

/// A Standard Webhooks delivery signed with `key` at `timestamp`.
fn standard_headers(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let timestamp = timestamp.to_string();
    let mac = hmac_bytes(
        key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    let signature = format!("v1,{}", BASE64.encode(mac));
    headers(&[
        ("X-Gitlab-Event", "Push Hook"),
        ("webhook-id", id),
        ("webhook-timestamp", &timestamp),
        ("webhook-signature", &signature),
    ])
}

#[test]
fn standard_webhooks_specification_example_verifies() {
    // The test vector of the Standard Webhooks reference libraries.
    let secret = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = br#"{"test": 2432232314}"#;
    let headers = headers(&[
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ]);
    let at = Timestamp::from_second(1_614_265_330).unwrap();
    webhook::verify_at(Forge::GitLab, &headers, body, secret, at).unwrap();
}

#[test]
fn standard_webhooks_raw_and_whsec_secrets() {
    // A raw secret is the key as it is.
    let raw = standard_headers(SECRET, "msg_1", now().as_second(), BODY);
    webhook::verify_at(Forge::GitLab, &raw, BODY, SECRET, now()).unwrap();

    // `whsec_<base64>`: the key is the decoded bytes.
    let key = b"0123456789abcdef0123456789abcdef";
    let secret = format!("whsec_{}", BASE64.encode(key));
    let encoded = standard_headers(key, "msg_2", now().as_second(), BODY);
    webhook::verify_at(Forge::GitLab, &encoded, BODY, secret.as_bytes(), now()).unwrap();

    // Signing with the text of the `whsec_` secret instead of its decoded key does not pass.
    let misused = standard_headers(secret.as_bytes(), "msg_3", now().as_second(), BODY);
    let error =
        webhook::verify_at(Forge::GitLab, &misused, BODY, secret.as_bytes(), now()).unwrap_err();
    assert!(matches!(
        error,
        WebhookError::BadSignature {
            header: "webhook-signature",
            ..
        }
    ));

    let broken_secret = b"whsec_***";
    let error =
        webhook::verify_at(Forge::GitLab, &encoded, BODY, broken_secret, now()).unwrap_err();
    assert!(matches!(error, WebhookError::InvalidSecret { .. }));
}

#[test]
fn standard_webhooks_any_of_several_signatures_passes() {
    let timestamp = now().as_second().to_string();
    let good = hmac_bytes(SECRET, &[b"msg_1.", timestamp.as_bytes(), b".", BODY]);
    let other = hmac_bytes(
        b"rotated-out key",
        &[b"msg_1.", timestamp.as_bytes(), b".", BODY],
    );
    let list = format!(
        "v1a,ignoredAsymmetric v1,{} v1,{}",
        BASE64.encode(other),
        BASE64.encode(good)
    );
    let headers = headers(&[
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", &timestamp),
        ("webhook-signature", &list),
    ]);
    webhook::verify_at(Forge::GitLab, &headers, BODY, SECRET, now()).unwrap();
}

#[test]
fn standard_webhooks_bad_signatures() {
    // Tampered body.
    let signed = standard_headers(SECRET, "msg_1", now().as_second(), BODY);
    let error = webhook::verify_at(Forge::GitLab, &signed, b"{}", SECRET, now()).unwrap_err();
    assert!(matches!(
        error,
        WebhookError::BadSignature {
            header: "webhook-signature",
            ..
        }
    ));

    // Another id than the one signed.
    let mut replayed = signed.clone();
    replayed.insert("webhook-id", HeaderValue::from_static("msg_2"));
    let error = webhook::verify_at(Forge::GitLab, &replayed, BODY, SECRET, now()).unwrap_err();
    assert!(matches!(error, WebhookError::BadSignature { .. }));

    // No `v1,` entry at all, or one that is not base64.
    for value in ["v2,abc", "garbage", "v1,!!!"] {
        let mut malformed = signed.clone();
        malformed.insert("webhook-signature", HeaderValue::from_str(value).unwrap());
        let error = webhook::verify_at(Forge::GitLab, &malformed, BODY, SECRET, now()).unwrap_err();
        assert!(
            matches!(
                error,
                WebhookError::BadSignature {
                    header: "webhook-signature",
                    ..
                }
            ),
            "{value}: {error:?}"
        );
    }

    // A timestamp that is not a number.
    let mut bad_time = signed.clone();
    bad_time.insert("webhook-timestamp", HeaderValue::from_static("yesterday"));
    let error = webhook::verify_at(Forge::GitLab, &bad_time, BODY, SECRET, now()).unwrap_err();
    assert!(matches!(
        error,
        WebhookError::BadSignature {
            header: "webhook-timestamp",
            ..
        }
    ));

    // A missing id.
    let mut no_id = signed;
    no_id.remove("webhook-id");
    let error = webhook::verify_at(Forge::GitLab, &no_id, BODY, SECRET, now()).unwrap_err();
    assert_eq!(
        error,
        WebhookError::MissingSignature {
            header: "webhook-id"
        }
    );
}

#[test]
fn standard_webhooks_expired_and_future_timestamps() {
    let at = now().as_second();
    // Within five minutes either way: accepted.
    for offset in [-300, -299, 0, 299, 300] {
        let headers = standard_headers(SECRET, "msg", at + offset, BODY);
        webhook::verify_at(Forge::GitLab, &headers, BODY, SECRET, now()).unwrap();
    }
    for offset in [-301, 301, -86_400] {
        let headers = standard_headers(SECRET, "msg", at + offset, BODY);
        let error = webhook::verify_at(Forge::GitLab, &headers, BODY, SECRET, now()).unwrap_err();
        assert_eq!(
            error,
            WebhookError::StaleTimestamp {
                skew_seconds: offset,
                tolerance_seconds: 300
            }
        );
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
    }
}

#[test]
fn gitlab_signature_decides_when_both_schemes_are_sent() {
    let mut headers = standard_headers(b"signing key", "msg", now().as_second(), BODY);
    headers.insert(
        "X-Gitlab-Token",
        HeaderValue::from_str("It's a Secret to Everybody").unwrap(),
    );
    let error = webhook::verify_at(Forge::GitLab, &headers, BODY, SECRET, now()).unwrap_err();
    assert!(matches!(
        error,
        WebhookError::BadSignature {
            header: "webhook-signature",
            ..
        }
    ));
    webhook::verify_at(Forge::GitLab, &headers, BODY, b"signing key", now()).unwrap();
}
