//! `sorat_pipeline::exec::parse_key_values`: the `$SORAT_OUTPUT` / `$SORAT_ENV` format
//! (`name=value` and `name<<DELIMITER` heredocs) is read or refused, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match sorat_pipeline::exec::parse_key_values(&text, "SORAT_OUTPUT") {
        Ok(values) => {
            for (name, _) in &values {
                assert!(!name.is_empty(), "an empty name was accepted");
            }
        }
        Err(error) => {
            let _ = error.to_string();
            let lines = text.split('\n').count();
            assert!(
                (1..=lines).contains(&error.line),
                "error line {} is not one of the {lines} lines",
                error.line,
            );
        }
    }
});
