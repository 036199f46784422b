//! Names and versions every store refuses before they reach storage.

use annals::store::{NewEvent, MAX_NAME_LEN};
use annals::{CommitMeta, ExpectedVersion, StoreError, StreamRef};

use annals::{ProjectionError, ProjectionRunner};

use crate::domain::{Counter, Create};
use crate::projection_cases::Totals;
use crate::{Store, Streams};

fn assert_invalid_name(result: Result<impl std::fmt::Debug, StoreError>, what: &str, reason: &str) {
    match result {
        Err(StoreError::InvalidName {
            what: found_what,
            reason: found_reason,
            ..
        }) => assert_eq!((found_what, found_reason), (what, reason)),
        other => panic!("expected an invalid {what} ({reason}), got {other:?}"),
    }
}

pub async fn event_types_and_versions_are_checked<S: Streams>(store: S) {
    let stream = StreamRef::new("account", "a");
    let before = store.log().await;
    let append = |event: NewEvent| {
        let store = store.clone();
        async move {
            store
                .append(
                    stream,
                    ExpectedVersion::Any,
                    vec![NewEvent::new("Fine", 1, "{}".into()), event],
                    &CommitMeta::new(),
                )
                .await
        }
    };
    for too_long in ["T".repeat(MAX_NAME_LEN + 1), "T".repeat(10 * 1024)] {
        assert_invalid_name(
            append(NewEvent::new(too_long, 1, "{}".into())).await,
            "event type",
            "is longer than 256 bytes",
        );
    }
    assert_invalid_name(
        append(NewEvent::new("", 1, "{}".into())).await,
        "event type",
        "is empty",
    );
    assert_invalid_name(
        append(NewEvent::new("Bad\u{0}Type", 1, "{}".into())).await,
        "event type",
        "contains a control character",
    );
    match append(NewEvent::new("Versionless", 0, "{}".into())).await {
        Err(StoreError::ZeroEventVersion {
            stream_type,
            stream_id,
            event_type,
        }) => assert_eq!(
            (
                stream_type.as_str(),
                stream_id.as_str(),
                event_type.as_str()
            ),
            ("account", "a", "Versionless")
        ),
        other => panic!("expected a refused version 0, got {other:?}"),
    }
    // Nothing of the refused appends was stored, not even their valid first events.
    assert_eq!(store.stream_version(stream).await.unwrap(), None);
    assert_eq!(store.log().await, before);

    // The longest accepted name round-trips.
    let longest = "T".repeat(MAX_NAME_LEN);
    store
        .append(
            stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::new(longest.clone(), 1, "{}".into())],
            &CommitMeta::new(),
        )
        .await
        .unwrap();
    let stored = store
        .read_stream(stream, annals::store::StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(stored[0].meta.event_type, longest);
}

pub async fn runner_names_are_checked<S: Store>(store: S) {
    let too_long = "p".repeat(MAX_NAME_LEN + 1);
    assert_invalid_name(
        store.checkpoint(&too_long).await,
        "runner name",
        "is longer than 256 bytes",
    );
    assert_invalid_name(store.checkpoint("").await, "runner name", "is empty");
    assert_invalid_name(
        store
            .try_lease(&too_long)
            .await
            .map(|lease| lease.is_some()),
        "runner name",
        "is longer than 256 bytes",
    );
    let mut tx = annals::store::TxStore::begin(&store).await.unwrap();
    assert_invalid_name(
        store.advance_checkpoint(&mut tx, &too_long, 0, 1).await,
        "runner name",
        "is longer than 256 bytes",
    );
    drop(tx);
    let longest = "p".repeat(MAX_NAME_LEN);
    assert_eq!(store.checkpoint(&longest).await.unwrap(), 0);

    // A runner named 10 KB fails before its projection handles anything.
    let repo = annals::Repository::<Counter, S>::new(store.clone());
    repo.execute(Create {
        id: "a".to_owned(),
        name: "a".to_owned(),
    })
    .await
    .unwrap();
    let name: &'static str = Box::leak("p".repeat(10 * 1024).into_boxed_str());
    let mut runner = ProjectionRunner::new(store.clone(), Totals::default()).named(name);
    match runner.catch_up().await {
        Err(ProjectionError::Store(StoreError::InvalidName { what, reason, .. })) => {
            assert_eq!((what, reason), ("runner name", "is longer than 256 bytes"));
        }
        other => panic!("a runner named 10 KB returned {other:?}"),
    }
    assert!(
        runner.projection().seen.is_empty(),
        "handled before failing"
    );
    assert!(runner.status().await.is_err());
}
