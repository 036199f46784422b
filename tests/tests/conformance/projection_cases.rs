//! What projections get from every store: catch-up that applies each handled event once,
//! filtered fetches, checkpoints that move only with a committed batch, rebuild, status and
//! lag, leases, live wake-ups, and inline projections that commit or fail with the append.

use std::sync::Arc;
use std::time::Duration;

use annals::{
    projection, EventMeta, ExecuteError, ProjectionError, ProjectionRunner, Repository, StreamRef,
};
use tokio::sync::Mutex;

use crate::domain::{Counter, Create, Created, Increment, Incremented, Step};
use crate::Store;

/// A read model kept in the projection itself, so it runs on any store: the totals per
/// counter and every position it saw. Increments of 13 make it fail.
#[derive(Debug, Default)]
pub struct Totals {
    pub totals: std::collections::BTreeMap<String, u64>,
    pub seen: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("13 is unlucky (position {0})")]
pub struct Unlucky(u64);

#[projection(name = "totals")]
impl Totals {
    #[on]
    fn created(&mut self, _: &Created, meta: &EventMeta) {
        self.totals.insert(meta.stream_id.clone(), 0);
        self.seen.push(meta.position);
    }

    #[on]
    async fn incremented(&mut self, e: &Incremented, meta: &EventMeta) -> Result<(), Unlucky> {
        if e.by == 13 {
            return Err(Unlucky(meta.position));
        }
        *self.totals.entry(meta.stream_id.clone()).or_default() += e.by;
        self.seen.push(meta.position);
        Ok(())
    }

    #[reset]
    fn clear(&mut self) {
        *self = Totals::default();
    }
}

async fn counters<S: Store>(store: &S) -> Repository<Counter, S> {
    Repository::new(store.clone())
}

async fn create<S: Store>(repo: &Repository<Counter, S>, id: &str) {
    let name = id.to_owned();
    repo.execute(Create {
        id: id.into(),
        name,
    })
    .await
    .unwrap();
}

async fn add<S: Store>(repo: &Repository<Counter, S>, id: &str, by: u64) {
    repo.execute(Increment { id: id.into(), by }).await.unwrap();
}

async fn step<S: Store>(repo: &Repository<Counter, S>, id: &str) {
    repo.execute(Step {
        id: id.into(),
        by: 1,
    })
    .await
    .unwrap();
}

/// Every event of the store with a type the projection handles, as (position, stream id).
async fn handled_positions<S: Store>(store: &S) -> Vec<u64> {
    let all = store
        .read_all(0, usize::MAX, &annals::store::EventFilter::all())
        .await
        .unwrap();
    all.iter()
        .filter(|e| e.meta.event_type != "Stepped")
        .map(|e| e.meta.position)
        .collect()
}

pub async fn catch_up_applies_each_event_once<S: Store>(store: S) {
    let repo = counters(&store).await;
    for id in ["a", "b", "c"] {
        create(&repo, id).await;
    }
    for i in 0..10 {
        add(&repo, ["a", "b", "c"][i % 3], 1 + i as u64).await;
        step(&repo, "a").await;
    }
    let mut runner = ProjectionRunner::new(store.clone(), Totals::default()).batch_size(3);
    let done = runner.catch_up().await.unwrap();
    assert_eq!(done.handled, 13);
    let expected = handled_positions(&store).await;
    assert_eq!(
        runner.projection().seen,
        expected,
        "each handled event once, in order"
    );
    let totals: Vec<u64> = runner.projection().totals.values().copied().collect();
    assert_eq!(totals, [1 + 4 + 7 + 10, 2 + 5 + 8, 3 + 6 + 9]);

    let status = runner.status().await.unwrap();
    assert_eq!(
        status.position,
        store.head().await.unwrap(),
        "past the skipped `Stepped`"
    );
    assert_eq!(status.lag(), 0);

    assert_eq!(runner.catch_up().await.unwrap().handled, 0, "nothing new");
    add(&repo, "b", 100).await;
    assert_eq!(runner.catch_up().await.unwrap().handled, 1);
    assert_eq!(runner.projection().totals["b"], 2 + 5 + 8 + 100);
    assert_eq!(runner.projection().seen, handled_positions(&store).await);
}

pub async fn checkpoint_survives_the_runner<S: Store>(store: S) {
    let repo = counters(&store).await;
    create(&repo, "a").await;
    add(&repo, "a", 1).await;
    let mut first = ProjectionRunner::new(store.clone(), Totals::default());
    first.catch_up().await.unwrap();
    drop(first);

    add(&repo, "a", 2).await;
    // A new runner (another process, a restart) starts from the committed checkpoint.
    let mut second = ProjectionRunner::new(store.clone(), Totals::default());
    assert_eq!(second.catch_up().await.unwrap().handled, 1);
    assert_eq!(second.projection().totals["a"], 2);
}

pub async fn failing_handler_keeps_the_checkpoint<S: Store>(store: S) {
    let repo = counters(&store).await;
    create(&repo, "a").await;
    add(&repo, "a", 1).await;
    add(&repo, "a", 13).await;
    add(&repo, "a", 2).await;
    let mut runner = ProjectionRunner::new(store.clone(), Totals::default()).batch_size(2);
    let error = runner.catch_up().await.unwrap_err();
    let positions = handled_positions(&store).await;
    match &error {
        ProjectionError::Handler {
            projection,
            event_type,
            position,
            source,
        } => {
            assert_eq!(
                (*projection, event_type.as_str()),
                ("totals", "Incremented")
            );
            assert_eq!(*position, positions[2]);
            assert_eq!(
                source.to_string(),
                format!("13 is unlucky (position {position})")
            );
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    // The first batch (two events) committed; the failing one did not move the checkpoint.
    assert_eq!(runner.status().await.unwrap().position, positions[1]);
}

pub async fn rebuild_replays_everything<S: Store>(store: S) {
    let repo = counters(&store).await;
    for id in ["a", "b"] {
        create(&repo, id).await;
        add(&repo, id, 5).await;
    }
    let mut runner = ProjectionRunner::new(store.clone(), Totals::default()).batch_size(1);
    runner.catch_up().await.unwrap();
    let before = runner.projection().totals.clone();
    let mut reports = Vec::new();
    let done = runner.rebuild(|p| reports.push(p)).await.unwrap();
    let head = store.head().await.unwrap();
    assert_eq!((done.handled, done.position, done.head), (4, head, head));
    assert_eq!(runner.projection().totals, before);
    assert_eq!(runner.projection().seen, handled_positions(&store).await);
    assert_eq!(reports.len(), 4, "one report per batch: {reports:?}");
    assert!(reports.windows(2).all(|w| w[0].position < w[1].position));
    assert!(reports.iter().all(|p| p.head == head), "{reports:?}");
    let status = runner.status().await.unwrap();
    assert_eq!((status.position, status.lag()), (head, 0));
}

pub async fn status_reports_the_lag<S: Store>(store: S) {
    let repo = counters(&store).await;
    create(&repo, "a").await;
    add(&repo, "a", 1).await;
    let head = store.head().await.unwrap();
    let mut runner = ProjectionRunner::new(store.clone(), Totals::default());
    let status = runner.status().await.unwrap();
    assert_eq!(
        (status.position, status.head, status.lag()),
        (0, head, head)
    );
    runner.catch_up().await.unwrap();
    assert_eq!(runner.status().await.unwrap().lag(), 0);

    // Only events the projection skips: they count as lag until a catch-up passes them.
    step(&repo, "a").await;
    step(&repo, "a").await;
    let new_head = store.head().await.unwrap();
    assert!(new_head > head);
    let status = runner.status().await.unwrap();
    assert_eq!(
        (status.position, status.head, status.lag()),
        (head, new_head, new_head - head)
    );
    assert_eq!(runner.catch_up().await.unwrap().handled, 0);
    let status = runner.status().await.unwrap();
    assert_eq!((status.position, status.lag()), (new_head, 0));
}

pub async fn leases_are_exclusive<S: Store>(store: S) {
    let lease = store
        .try_lease("totals")
        .await
        .unwrap()
        .expect("free at first");
    assert!(store.try_lease("totals").await.unwrap().is_none(), "held");
    assert!(
        store.clone().try_lease("totals").await.unwrap().is_none(),
        "held for clones too"
    );
    let other = store.try_lease("other").await.unwrap();
    assert!(other.is_some(), "leases are per projection");
    drop(lease);
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.try_lease("totals").await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("released when dropped");
}

pub async fn run_wakes_on_appends<S: Store>(store: S) {
    let repo = counters(&store).await;
    create(&repo, "a").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner_store = store.clone();
    let task = tokio::spawn(async move {
        // Only a wake-up can make it see the appends in time: the poll is a minute away.
        let mut runner = ProjectionRunner::new(runner_store, Totals::default())
            .idle_timeout(Duration::from_secs(60));
        runner
            .run(async { stopped.await.unwrap_or(()) })
            .await
            .unwrap();
        runner.into_projection()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for by in 1..=5 {
        add(&repo, "a", by).await;
    }
    let head = store.head().await.unwrap();
    let probe = ProjectionRunner::new(store.clone(), Totals::default());
    tokio::time::timeout(Duration::from_secs(20), async {
        while probe.status().await.unwrap().position < head {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the live runner followed the appends");
    stop.send(()).unwrap();
    let model = task.await.unwrap();
    assert_eq!(model.totals["a"], 15);
    assert_eq!(model.seen, handled_positions(&store).await);
}

pub async fn inline_projection_commits_with_the_events<S: Store>(store: S) {
    let totals = Arc::new(Mutex::new(Totals::default()));
    let repo = Repository::<Counter, _>::new(store.clone()).with_inline(Arc::clone(&totals));
    create(&repo, "a").await;
    add(&repo, "a", 4).await;
    step(&repo, "a").await;
    add(&repo, "a", 6).await;
    let model = totals.lock().await;
    assert_eq!(
        model.totals["a"], 10,
        "up to date as soon as execute returns"
    );
    assert_eq!(
        model.seen,
        handled_positions(&store).await,
        "the stored positions"
    );
}

pub async fn failing_inline_projection_appends_nothing<S: Store>(store: S) {
    let totals = Arc::new(Mutex::new(Totals::default()));
    let repo = Repository::<Counter, _>::new(store.clone()).with_inline(Arc::clone(&totals));
    create(&repo, "a").await;
    let head = store.head().await.unwrap();
    let error = repo
        .execute(Increment {
            id: "a".into(),
            by: 13,
        })
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("`totals`") && message.contains("`Incremented`"),
        "the error names the projection and the event: {message}"
    );
    match error {
        ExecuteError::Projection(ProjectionError::Handler { event_type, .. }) => {
            assert_eq!(event_type, "Incremented");
        }
        other => panic!("expected the inline projection's error, got {other:?}"),
    }
    assert_eq!(
        store.head().await.unwrap(),
        head,
        "the events were rolled back"
    );
    assert_eq!(
        store
            .stream_version(StreamRef::new("counter", "a"))
            .await
            .unwrap(),
        Some(1)
    );
    add(&repo, "a", 2).await;
    assert_eq!(
        store
            .stream_version(StreamRef::new("counter", "a"))
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(totals.lock().await.totals["a"], 2);
}

/// `wait_for_checkpoint` reports a command's position as processed only once the runner
/// committed past it, and gives up at its timeout.
pub async fn waiting_for_a_commands_position<S: Store>(store: S) {
    let repo = counters(&store).await;
    create(&repo, "a").await;
    let executed = repo
        .execute(Increment {
            id: "a".into(),
            by: 3,
        })
        .await
        .unwrap();
    assert!(executed.position > 0);
    let name = <Totals as annals::Projection<S::Tx>>::NAME;
    let short = Duration::from_millis(30);
    assert!(
        !annals::wait_for_checkpoint(&store, name, executed.position, short)
            .await
            .unwrap(),
        "no runner has run: the position is not reached"
    );
    assert!(annals::wait_for_checkpoint(&store, name, 0, short)
        .await
        .unwrap());
    let mut runner = ProjectionRunner::new(store.clone(), Totals::default());
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            annals::wait_for_checkpoint(&store, name, executed.position, Duration::from_secs(10))
                .await
        })
    };
    runner.catch_up().await.unwrap();
    assert!(waiter.await.unwrap().unwrap());
    assert_eq!(runner.projection().totals["a"], 3);
}

/// `wait_for_checkpoints` waits for every runner of a set: true only once the last of them
/// committed past the position, false at the timeout while one is behind; a bad name is an
/// error up front.
pub async fn waiting_for_every_runner_of_a_set<S: Store>(store: S) {
    let repo = counters(&store).await;
    create(&repo, "a").await;
    let executed = repo
        .execute(Increment {
            id: "a".into(),
            by: 4,
        })
        .await
        .unwrap();
    let names = ["totals", "totals_copy"];
    let short = Duration::from_millis(30);
    let wait = |timeout| {
        let store = store.clone();
        async move { annals::wait_for_checkpoints(&store, &names, executed.position, timeout).await }
    };
    let mut first = ProjectionRunner::new(store.clone(), Totals::default());
    first.catch_up().await.unwrap();
    assert!(
        !wait(short).await.unwrap(),
        "one runner of the set has not run: not reached"
    );
    assert!(annals::wait_for_checkpoints(&store, &names, 0, short)
        .await
        .unwrap());
    assert!(matches!(
        annals::wait_for_checkpoints(&store, &["totals", ""], 0, short).await,
        Err(annals::StoreError::InvalidName { .. })
    ));
    let waiter = tokio::spawn(wait(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut second = ProjectionRunner::new(store.clone(), Totals::default()).named("totals_copy");
    second.catch_up().await.unwrap();
    assert!(waiter.await.unwrap().unwrap());
    assert_eq!(second.projection().totals["a"], 4);
}

/// A runner can follow another store's log (another service's events, here a
/// `MemoryStore`) while keeping its checkpoint and lease in the store under test, and under
/// another name than the projection's it keeps a checkpoint of its own: catch-up, then live.
pub async fn runner_follows_another_source<S: Store>(store: S) {
    use annals::source::LogSource;
    use annals::store::EventLog;
    use annals::{MemoryStore, Runner};

    let other = MemoryStore::new();
    let upstream = counters(&other).await;
    create(&upstream, "a").await;
    add(&upstream, "a", 2).await;
    step(&upstream, "a").await;

    let mut runner = Runner::with_source(
        store.clone(),
        LogSource::new(other.clone()),
        Totals::default(),
    )
    .named("totals_from_upstream")
    .batch_size(1);
    assert_eq!(runner.name(), "totals_from_upstream");
    let done = runner.catch_up().await.unwrap();
    assert_eq!(done.handled, 2);
    assert_eq!(runner.projection().totals["a"], 2);
    let upstream_head = other.head().await.unwrap();
    assert_eq!(
        store.checkpoint("totals_from_upstream").await.unwrap(),
        upstream_head,
        "the checkpoint is the source's cursor, kept in the runner's store"
    );
    assert_eq!(store.checkpoint("totals").await.unwrap(), 0);
    assert_eq!(runner.status().await.unwrap().lag(), 0);

    // Live: the source's wake-ups reach a runner whose lease is in the other store.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async { stopped.await.unwrap_or(()) })
            .await
            .unwrap();
        runner.into_projection()
    });
    add(&upstream, "a", 5).await;
    let head = other.head().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while store.checkpoint("totals_from_upstream").await.unwrap() < head {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the live runner followed the other store");
    stop.send(()).unwrap();
    let model = task.await.unwrap();
    assert_eq!(model.totals["a"], 7);
    assert_eq!(model.seen, handled_positions(&other).await);
}

/// Refuses increments of one amount while `refuse` is set; records the others by
/// position (a model kept in the projection itself sees the events before a failing one
/// again when their batch rolls back; one kept in the store's transaction does not).
#[derive(Debug, Default)]
pub struct Picky {
    pub refuse: Option<u64>,
    pub seen: std::collections::BTreeMap<u64, u64>,
}

impl Picky {
    fn amounts(&self) -> Vec<u64> {
        self.seen.values().copied().collect()
    }
}

#[projection(name = "picky")]
impl Picky {
    #[on]
    fn incremented(&mut self, e: &Incremented, meta: &EventMeta) -> Result<(), Unlucky> {
        if Some(e.by) == self.refuse {
            return Err(Unlucky(meta.position));
        }
        self.seen.insert(meta.position, e.by);
        Ok(())
    }
}

/// With parking, an event the handler keeps failing on is set aside with its error after
/// the configured attempts, the events before it in its batch commit, the runner carries on
/// past it, and the parked event can be retried (handled then) or skipped, once.
pub async fn parking_sets_failing_events_aside<S: Store>(store: S) {
    use annals::store::Resolution;

    let repo = counters(&store).await;
    create(&repo, "a").await;
    for by in [1, 2, 7, 3, 7, 4] {
        add(&repo, "a", by).await;
    }
    let mut runner = ProjectionRunner::new(
        store.clone(),
        Picky {
            refuse: Some(7),
            seen: Default::default(),
        },
    )
    .park_after(2)
    .retry_backoff(annals::Backoff::new(
        Duration::from_millis(1),
        Duration::from_millis(5),
    ))
    .batch_size(10);
    runner.catch_up().await.unwrap();
    assert_eq!(
        runner.projection().amounts(),
        [1, 2, 3, 4],
        "every other event"
    );
    assert_eq!(
        runner.status().await.unwrap().lag(),
        0,
        "the runner moved past both"
    );
    let parked = runner.parked().await.unwrap();
    assert_eq!(parked.len(), 2);
    assert_eq!(parked[0].runner, "picky");
    assert_eq!(parked[0].event.meta.event_type, "Incremented");
    assert_eq!(parked[0].event.meta.version, 4);
    assert!(
        parked[0].event.payload.contains('7'),
        "the event as delivered"
    );
    assert!(
        parked[0].error.contains("13 is unlucky"),
        "{}",
        parked[0].error
    );
    assert_eq!(parked[0].attempts, 2);
    assert!(parked[0].id < parked[1].id);
    assert_eq!(parked[0].resolution, None);
    assert_eq!(store.parked(None, false).await.unwrap(), parked);

    // A retry that fails again keeps it parked, one attempt more.
    let error = runner.retry_parked(parked[0].id).await.unwrap_err();
    assert!(matches!(error, ProjectionError::Handler { .. }), "{error}");
    let again = runner.parked().await.unwrap();
    assert_eq!(again[0].attempts, 3);

    // Fixed: the retry handles it; the other one is skipped.
    runner.projection_mut().refuse = None;
    runner.retry_parked(parked[0].id).await.unwrap();
    assert_eq!(runner.projection().amounts(), [1, 2, 7, 3, 4]);
    runner.skip_parked(parked[1].id).await.unwrap();
    assert!(runner.parked().await.unwrap().is_empty());
    let all = store.parked(Some("picky"), true).await.unwrap();
    assert_eq!(
        all.iter().map(|p| p.resolution).collect::<Vec<_>>(),
        [Some(Resolution::Retried), Some(Resolution::Skipped)]
    );
    for id in [parked[0].id, parked[1].id] {
        assert!(matches!(
            runner.retry_parked(id).await,
            Err(ProjectionError::NotParked { id: i, .. }) if i == id
        ));
        assert!(runner.skip_parked(id).await.is_err(), "once");
    }
    assert_eq!(runner.projection().amounts(), [1, 2, 7, 3, 4]);
}
