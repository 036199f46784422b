//! The stream catalog (`StreamCatalog`): every stream listed once, in (type, id) order,
//! filtered by type and paged by a cursor.

use annals::store::{StreamCatalog, StreamInfo, StreamQuery, StreamRange};
use annals::{ExpectedVersion, StreamRef};

use crate::store_cases::{append, numbered, read};
use crate::Streams;

/// `(type, id, version, events)` of each listed stream.
fn summary(page: &[StreamInfo]) -> Vec<(String, String, u64, u64)> {
    page.iter()
        .map(|s| {
            (
                s.stream_type.clone(),
                s.stream_id.clone(),
                s.version,
                s.events,
            )
        })
        .collect()
}

async fn list<S: StreamCatalog>(store: &S, query: StreamQuery) -> Vec<StreamInfo> {
    store
        .list_streams(&query)
        .await
        .unwrap_or_else(|e| panic!("listing streams ({query:?}) failed: {e}"))
}

/// Every page of `query`, `page` streams at a time.
async fn walk<S: StreamCatalog>(store: &S, query: StreamQuery, page: usize) -> Vec<StreamInfo> {
    let mut all: Vec<StreamInfo> = Vec::new();
    loop {
        let mut next = query.clone().limit(page);
        if let Some(last) = all.last() {
            next = next.after(last.stream());
        }
        let got = list(store, next).await;
        assert!(got.len() <= page, "a page of {page} returned {}", got.len());
        let done = got.len() < page;
        all.extend(got);
        if done {
            return all;
        }
    }
}

pub async fn streams_are_listed_in_pages<S: Streams + StreamCatalog>(store: S) {
    assert!(list(&store, StreamQuery::new()).await.is_empty());

    let streams = [
        ("order", "o2", 1),
        ("account", "a1", 3),
        ("order", "o1", 2),
        ("account", "a2", 1),
        ("account", "a10", 4),
        ("order", "o1/part", 1),
    ];
    for (stream_type, stream_id, count) in streams {
        append(
            &store,
            stream_type,
            stream_id,
            ExpectedVersion::Any,
            numbered(1, count),
        )
        .await;
    }
    // One more append to a listed stream: its version and last recording move on.
    append(
        &store,
        "account",
        "a2",
        ExpectedVersion::Exact(1),
        numbered(2, 1),
    )
    .await;

    let owned = |t: &str, id: &str, v: u64| (t.to_owned(), id.to_owned(), v, v);
    let everything = vec![
        owned("account", "a1", 3),
        owned("account", "a10", 4),
        owned("account", "a2", 2),
        owned("order", "o1", 2),
        owned("order", "o1/part", 1),
        owned("order", "o2", 1),
    ];
    let listed = list(&store, StreamQuery::new()).await;
    assert_eq!(summary(&listed), everything);
    for stream in &listed {
        let events = read(
            &store,
            &stream.stream_type,
            &stream.stream_id,
            StreamRange::ALL,
        )
        .await;
        let last = events.last().expect("a listed stream has events");
        assert_eq!(
            stream.updated_at,
            Some(last.meta.recorded_at),
            "{}: updated_at is its last event's recording time",
            stream.stream()
        );
    }

    let orders = list(&store, StreamQuery::new().stream_type("order")).await;
    assert_eq!(summary(&orders), everything[3..].to_vec());
    assert!(list(&store, StreamQuery::new().stream_type("nothing"))
        .await
        .is_empty());
    assert!(list(&store, StreamQuery::new().stream_type("orde"))
        .await
        .is_empty());

    // Pages of every size, with and without the type filter, give the same streams.
    for page in [1, 2, 5, 6, 7] {
        assert_eq!(
            summary(&walk(&store, StreamQuery::new(), page).await),
            everything,
            "pages of {page}"
        );
        assert_eq!(
            summary(&walk(&store, StreamQuery::new().stream_type("account"), page).await),
            everything[..3].to_vec(),
            "account pages of {page}"
        );
    }

    // A cursor of another type than the filter: the filter still holds.
    let after_accounts = StreamQuery::new()
        .stream_type("order")
        .after(StreamRef::new("account", "zzz"));
    assert_eq!(
        summary(&list(&store, after_accounts).await),
        everything[3..].to_vec()
    );
    let past_orders = StreamQuery::new()
        .stream_type("account")
        .after(StreamRef::new("order", "o1"));
    assert!(list(&store, past_orders).await.is_empty());
    // A cursor that is not a stream: the page starts at the next one.
    let between = StreamQuery::new()
        .after(StreamRef::new("account", "a11"))
        .limit(2);
    assert_eq!(
        summary(&list(&store, between).await),
        everything[2..4].to_vec()
    );
    let past_everything = StreamQuery::new().after(StreamRef::new("order", "o2"));
    assert!(list(&store, past_everything).await.is_empty());
    // A limit of 0 is taken as 1.
    assert_eq!(list(&store, StreamQuery::new().limit(0)).await.len(), 1);
}
