//! `sorat_trigger::webhook`: a delivery from anyone on the network. The first byte picks the
//! forge and event (as headers), the rest is the body: detection, verification and parsing
//! answer with a value or an error, never a panic, and an event always has a ref and a sha.

#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sorat_trigger::webhook::{self, Parsed};

const EVENTS: &[(&str, &str)] = &[
    ("X-GitHub-Event", "push"),
    ("X-GitHub-Event", "pull_request"),
    ("X-GitHub-Event", "ping"),
    ("X-Gitlab-Event", "Push Hook"),
    ("X-Gitlab-Event", "Tag Push Hook"),
    ("X-Gitlab-Event", "Merge Request Hook"),
    ("X-Gitea-Event", "push"),
    ("X-Gitea-Event", "pull_request"),
    ("X-Forgejo-Event", "push"),
    ("X-Forgejo-Event", "pull_request"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (header, event) = EVENTS[selector as usize % EVENTS.len()];
    let mut headers = HeaderMap::new();
    headers.insert(header, HeaderValue::from_static(event));
    // Half the inputs also carry signature headers made of the body's first bytes.
    if selector & 0x80 != 0 {
        let junk = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        if let Ok(value) = HeaderValue::from_str(&junk) {
            headers.insert("X-Hub-Signature-256", value.clone());
            headers.insert("X-Gitea-Signature", value.clone());
            headers.insert("X-Gitlab-Token", value.clone());
            headers.insert("webhook-signature", value.clone());
            headers.insert("webhook-timestamp", value.clone());
            headers.insert("webhook-id", value);
        }
    }
    let Ok(forge) = webhook::detect(&headers) else {
        return;
    };
    let _ = webhook::verify(forge, &headers, body, b"fuzz-secret");
    match webhook::parse(forge, &headers, body) {
        Ok(Parsed::Event(event)) => {
            assert!(!event.git_ref.is_empty(), "an event without a ref");
            let _ = event.facts();
            let _ = event.starts_pipeline_by_default();
        }
        Ok(Parsed::Ping | Parsed::Ignored(_)) => {}
        Err(error) => {
            let _ = (error.to_string(), error.status());
        }
    }
});
