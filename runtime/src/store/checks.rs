//! Checks and conventions every store applies the same way.

use time::OffsetDateTime;

use super::StreamRef;
use crate::error::StoreError;

/// The longest stream type or id a store accepts, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 512;

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
