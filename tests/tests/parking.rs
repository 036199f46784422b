//! Parking with a read model in the store's own transaction (SQLite): an
//! event that does not decode, or that its handler refuses, is set aside in the
//! transaction that moves the checkpoint past it; every other event reaches the read model
//! exactly once, the events before the failing one in its batch included.

use annals::store::{CommitMeta, EventStore, ExpectedVersion, NewEvent, ParkingStore};
use annals::{
    projection, Event, EventMeta, ProjectionError, ProjectionRunner, SqliteStore, StreamRef,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Credited {
    amount: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("amount {0} refused")]
struct Refused(i64);

/// One row per handled event, in the store's transaction.
struct Credits;

#[projection(name = "credits")]
impl Credits {
    #[on]
    async fn credited(
        &mut self,
        e: &Credited,
        meta: &EventMeta,
        tx: &mut annals::SqliteTx,
    ) -> Result<(), annals::error::BoxError> {
        if e.amount < 0 {
            return Err(Refused(e.amount).into());
        }
        sqlx::query("INSERT INTO credits (position, amount) VALUES (?, ?)")
            .bind(i64::try_from(meta.position)?)
            .bind(e.amount)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

async fn credit(store: &SqliteStore, payload: &str) {
    store
        .append(
            StreamRef::new("account", "a"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Credited", 1, payload.to_owned())],
            &CommitMeta::default(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn sqlite_read_model_gets_every_other_event_exactly_once() {
    let dir = annals_tests::TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path().join("parking.db"))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE credits (position INTEGER PRIMARY KEY, amount INTEGER NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    for payload in [
        r#"{"amount":1}"#,
        r#"{"amount":2}"#,
        r#"{"amount":"three"}"#,
        r#"{"amount":4}"#,
        r#"{"amount":-5}"#,
        r#"{"amount":6}"#,
    ] {
        credit(&store, payload).await;
    }
    let mut runner = ProjectionRunner::new(store.clone(), Credits)
        .batch_size(100)
        .park_after(1);
    runner.catch_up().await.unwrap();

    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT position, amount FROM credits ORDER BY position")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        rows,
        [(1, 1), (2, 2), (4, 4), (6, 6)],
        "each other event exactly once"
    );
    let parked = store.parked(Some("credits"), false).await.unwrap();
    assert_eq!(
        parked
            .iter()
            .map(|p| p.event.meta.position)
            .collect::<Vec<_>>(),
        [3, 5]
    );
    assert!(
        parked[0].error.contains("three"),
        "the decode error: {}",
        parked[0].error
    );
    assert!(
        parked[1].error.contains("amount -5 refused"),
        "{}",
        parked[1].error
    );
    assert_eq!(parked[0].attempts, 1);
    assert_eq!(runner.status().await.unwrap().lag(), 0);

    // Without parking, the same failure stops the runner with the checkpoint before it.
    credit(&store, r#"{"amount":-7}"#).await;
    credit(&store, r#"{"amount":8}"#).await;
    let mut strict = ProjectionRunner::new(store.clone(), Credits).batch_size(100);
    let error = strict.catch_up().await.unwrap_err();
    assert!(
        matches!(error, ProjectionError::Handler { position: 7, .. }),
        "{error}"
    );
    assert_eq!(strict.status().await.unwrap().position, 6);
    assert_eq!(store.parked(Some("credits"), false).await.unwrap().len(), 2);
}
