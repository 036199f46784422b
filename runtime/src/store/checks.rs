//! Checks and conventions every store applies the same way.

use time::OffsetDateTime;

use super::{NewEvent, StreamRef};
use crate::error::StoreError;

/// The longest stream type or id a store accepts, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 512;

/// The longest event type or runner name a store accepts, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Checks a stream's type and id before they reach storage: not empty, at most
/// [`MAX_STREAM_ID_LEN`] bytes, no control characters.
pub fn validate_stream(stream: StreamRef<'_>) -> Result<(), StoreError> {
    for (what, value) in [
        ("stream type", stream.stream_type),
        ("stream id", stream.stream_id),
    ] {
        let reason = if value.is_empty() {
            "is empty"
        } else if value.len() > MAX_STREAM_ID_LEN {
            "is longer than 512 bytes"
        } else if value.chars().any(char::is_control) {
            "contains a control character"
        } else {
            continue;
        };
        return Err(StoreError::InvalidStream {
            what,
            value: truncate_for_display(value),
            reason,
        });
    }
    Ok(())
}

/// Checks the events of an append before they reach storage: each type a name of at most
/// [`MAX_NAME_LEN`] bytes without control characters, each schema version at least 1.
pub fn validate_events(stream: StreamRef<'_>, events: &[NewEvent]) -> Result<(), StoreError> {
    for event in events {
        validate_name("event type", &event.event_type)?;
        if event.event_version == 0 {
            return Err(StoreError::ZeroEventVersion {
                stream_type: stream.stream_type.to_owned(),
                stream_id: stream.stream_id.to_owned(),
                event_type: event.event_type.clone(),
            });
        }
    }
    Ok(())
}

/// Checks a runner's name (the key of its checkpoint and lease): not empty, at most
/// [`MAX_NAME_LEN`] bytes, no control characters.
pub fn validate_runner_name(name: &str) -> Result<(), StoreError> {
    validate_name("runner name", name)
}

fn validate_name(what: &'static str, value: &str) -> Result<(), StoreError> {
    let reason = if value.is_empty() {
        "is empty"
    } else if value.len() > MAX_NAME_LEN {
        "is longer than 256 bytes"
    } else if value.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidName {
        what,
        value: truncate_for_display(value),
        reason,
    })
}

fn truncate_for_display(value: &str) -> String {
    const SHOWN: usize = 64;
    if value.len() <= SHOWN {
        return value.escape_debug().to_string();
    }
    let mut end = SHOWN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", value[..end].escape_debug(), value.len())
}

/// The current time, truncated to microseconds: every store keeps that precision, so a
/// recorded-at time reads back equal whichever store wrote it.
pub fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let micros = now.microsecond();
    now.replace_microsecond(micros).unwrap_or(now)
}
