//! Decoding stored events with the registered event enums, the way the application does:
//! through [`Events::decode`] and so through every upcaster.

use crate::event::{DecodeError, Events};
use crate::store::RecordedEvent;

/// A stored event as the current code reads it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DecodedEvent {
    /// The event type the code knows it as (the current name, when stored under an alias).
    pub event_type: &'static str,
    /// The schema version it was upcast to (the current one).
    pub event_version: u32,
    /// The decoded event encoded again: its current JSON, after upcasting.
    pub data: serde_json::Value,
    /// The event enum that decoded it (its Rust type name).
    pub decoded_by: &'static str,
}

/// Why a stored event does not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeFailure {
    /// No registered event enum has the stored type among its names and aliases.
    #[error("no registered event enum knows event type `{event_type}`")]
    UnknownType {
        /// The stored type name.
        event_type: String,
    },
    /// The stream's aggregate is registered, and its event enum does not know this type:
    /// loading the aggregate fails on it.
    #[error("event type `{event_type}` is not an event of `{decoded_by}`, the events of stream type `{stream_type}`")]
    NotInAggregate {
        /// The stored type name.
        event_type: String,
        /// The stream type.
        stream_type: String,
        /// The aggregate's event enum.
        decoded_by: &'static str,
    },
    /// The enum knows the type and refused the payload or its version.
    #[error("`{decoded_by}` cannot decode it: {reason}")]
    Decode {
        /// The event enum that tried.
        decoded_by: &'static str,
        /// Why it failed.
        reason: DecodeError,
    },
    /// The event decoded, but encoding it again as JSON failed.
    #[error("`{decoded_by}` decoded it, but cannot encode it again: {reason}")]
    Encode {
        /// The event enum.
        decoded_by: &'static str,
        /// The JSON error.
        reason: serde_json::Error,
    },
}

impl DecodeFailure {
    /// Whether no registered enum knows the stored type at all (rather than one that
    /// should know it refusing it).
    pub fn is_unknown_type(&self) -> bool {
        matches!(self, DecodeFailure::UnknownType { .. })
    }
}

type DecodeFn = fn(&str, u32, &str) -> Result<(&'static str, u32, String), DecodeError>;

/// One registered event enum.
pub(super) struct Decoder {
    /// The aggregate's stream type, when registered through an aggregate.
    stream_type: Option<&'static str>,
    enum_name: &'static str,
    accepted: Vec<&'static str>,
    decode: DecodeFn,
}

fn decode_as<E: Events>(
    event_type: &str,
    version: u32,
    payload: &str,
) -> Result<(&'static str, u32, String), DecodeError> {
    let event = E::decode(event_type, version, payload)?;
    let json = event.encode().map_err(DecodeError::Payload)?;
    Ok((event.event_type(), event.event_version(), json))
}

impl Decoder {
    pub(super) fn new<E: Events>(stream_type: Option<&'static str>) -> Self {
        Decoder {
            stream_type,
            enum_name: std::any::type_name::<E>(),
            accepted: E::accepted_names(),
            decode: decode_as::<E>,
        }
    }

    fn accepts(&self, event_type: &str) -> bool {
        self.accepted.contains(&event_type)
    }

    fn run(&self, event: &RecordedEvent) -> Result<DecodedEvent, DecodeFailure> {
        let decoded_by = self.enum_name;
        let (event_type, event_version, json) = (self.decode)(
            &event.meta.event_type,
            event.meta.event_version,
            &event.payload,
        )
        .map_err(|reason| DecodeFailure::Decode { decoded_by, reason })?;
        let data = serde_json::from_str(&json)
            .map_err(|reason| DecodeFailure::Encode { decoded_by, reason })?;
        Ok(DecodedEvent {
            event_type,
            event_version,
            data,
            decoded_by,
        })
    }
}

/// Every registered enum, in registration order.
#[derive(Default)]
pub(super) struct Decoders(Vec<Decoder>);

impl Decoders {
    pub(super) fn add(&mut self, decoder: Decoder) {
        self.0.push(decoder);
    }

    /// Decodes `event` with its stream's aggregate enum when that aggregate is registered
    /// (as loading the aggregate would), else with the first enum that knows its type.
    pub(super) fn decode(&self, event: &RecordedEvent) -> Result<DecodedEvent, DecodeFailure> {
        let event_type = &event.meta.event_type;
        let mut own = self
            .0
            .iter()
            .filter(|d| d.stream_type == Some(event.meta.stream_type.as_str()))
            .peekable();
        if let Some(first) = own.peek() {
            let decoded_by = first.enum_name;
            return match own.find(|d| d.accepts(event_type)) {
                Some(decoder) => decoder.run(event),
                None => Err(DecodeFailure::NotInAggregate {
                    event_type: event_type.clone(),
                    stream_type: event.meta.stream_type.clone(),
                    decoded_by,
                }),
            };
        }
        match self.0.iter().find(|d| d.accepts(event_type)) {
            Some(decoder) => decoder.run(event),
            None => Err(DecodeFailure::UnknownType {
                event_type: event_type.clone(),
            }),
        }
    }
}
