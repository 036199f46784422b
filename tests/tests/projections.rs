//! Projections on the memory store: the macro's dispatch, filtering, checkpoints, rebuild,
//! and the live runner.

use std::collections::BTreeMap;
use std::time::Duration;

use annals::{
    aggregate, projection, Command, Event, EventMeta, Events, MemoryStore, MemoryTx, Projection,
    ProjectionError, ProjectionRunner, Repository,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Opened {
    owner: String,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "Credited", aliases = ["Deposited"])]
struct Credited {
    amount: u64,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Noted {
    text: String,
}

#[derive(Debug, Clone, PartialEq, Events)]
enum WalletEvent {
    Opened(Opened),
    Credited(Credited),
    Noted(Noted),
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Wallet)]
struct Credit {
    #[command(id)]
    wallet: String,
    amount: u64,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Wallet)]
struct Note {
    #[command(id)]
    wallet: String,
    text: String,
}

#[derive(Default)]
struct Wallet {
    opened: bool,
}

#[aggregate(id = String, event = WalletEvent, error = Never)]
impl Wallet {
    #[command(any)]
    fn credit(&self, cmd: Credit) -> Result<Vec<WalletEvent>, Never> {
        let mut events = Vec::new();
        if !self.opened {
            events.push(
                Opened {
                    owner: cmd.wallet.clone(),
                }
                .into(),
            );
        }
        events.push(Credited { amount: cmd.amount }.into());
        Ok(events)
    }

    #[command]
    fn note(&self, cmd: Note) -> Result<Noted, Never> {
        Ok(Noted { text: cmd.text })
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {
        self.opened = true;
    }

    #[apply]
    fn credited(&mut self, _: &Credited) {}

    #[apply]
    fn noted(&mut self, _: &Noted) {}
}

/// A read model kept in the projection itself: works with any store's transaction.
#[derive(Default)]
struct Balances {
    balances: BTreeMap<String, u64>,
    seen: Vec<u64>,
}

#[projection(name = "balances")]
impl Balances {
    #[on]
    fn opened(&mut self, _: &Opened, meta: &EventMeta) {
        self.balances.insert(meta.stream_id.clone(), 0);
        self.seen.push(meta.position);
    }

    #[on]
    async fn credited(&mut self, e: &Credited, meta: &EventMeta) -> Result<(), std::io::Error> {
        tokio::task::yield_now().await;
        *self.balances.entry(meta.stream_id.clone()).or_default() += e.amount;
        self.seen.push(meta.position);
        Ok(())
    }

    #[reset]
    fn clear(&mut self) {
        self.balances.clear();
        self.seen.clear();
    }
}

async fn credit(wallets: &Repository<Wallet, MemoryStore>, wallet: &str, amount: u64) {
    wallets
        .execute(Credit {
            wallet: wallet.into(),
            amount,
        })
        .await
        .unwrap();
}

#[test]
fn the_macro_lists_handled_types_with_aliases() {
    let mut types = <Balances as Projection<MemoryTx>>::event_types();
    types.sort_unstable();
    assert_eq!(types, ["Credited", "Deposited", "Opened"]);
    assert_eq!(<Balances as Projection<MemoryTx>>::NAME, "balances");
}

#[tokio::test]
async fn catch_up_applies_each_event_once_and_skips_unhandled_types() {
    let store = MemoryStore::new();
    let wallets = Repository::<Wallet, _>::new(store.clone());
    credit(&wallets, "a", 5).await;
    credit(&wallets, "b", 7).await;
    wallets
        .execute(Note {
            wallet: "a".into(),
            text: "hi".into(),
        })
        .await
        .unwrap();
    credit(&wallets, "a", 1).await;

    let mut runner = ProjectionRunner::new(store.clone(), Balances::default()).batch_size(2);
    let progress = runner.catch_up().await.unwrap();
    assert_eq!(progress.handled, 5);
    let status = runner.status().await.unwrap();
    assert_eq!((status.position, status.head, status.lag()), (6, 6, 0));
    let model = runner.projection();
    assert_eq!(
        model.balances,
        BTreeMap::from([("a".into(), 6), ("b".into(), 7)])
    );
    assert_eq!(model.seen, [1, 2, 3, 4, 6]);

    // Nothing new: a second catch-up handles nothing and changes nothing.
    assert_eq!(runner.catch_up().await.unwrap().handled, 0);
    assert_eq!(runner.projection().seen.len(), 5);

    // Only new events are handled after more appends.
    credit(&wallets, "b", 3).await;
    assert_eq!(runner.catch_up().await.unwrap().handled, 1);
    assert_eq!(runner.projection().balances["b"], 10);
}

#[tokio::test]
async fn rebuild_resets_the_read_model_and_replays_with_progress() {
    let store = MemoryStore::new();
    let wallets = Repository::<Wallet, _>::new(store.clone());
    for i in 0..10 {
        credit(&wallets, &format!("w{}", i % 3), 1).await;
    }
    let mut runner = ProjectionRunner::new(store, Balances::default()).batch_size(4);
    runner.catch_up().await.unwrap();
    let before = runner.projection().balances.clone();

    let mut reports = Vec::new();
    let done = runner.rebuild(|p| reports.push(p)).await.unwrap();
    assert_eq!(done.handled, 13);
    assert_eq!(runner.projection().balances, before);
    assert_eq!(runner.projection().seen, (1..=13).collect::<Vec<_>>());
    assert!(reports.len() >= 3, "progress after each batch: {reports:?}");
    assert!(reports.windows(2).all(|w| w[0].position < w[1].position));
}

#[tokio::test]
async fn run_follows_live_appends_until_shutdown() {
    let store = MemoryStore::new();
    let wallets = Repository::<Wallet, _>::new(store.clone());
    credit(&wallets, "a", 1).await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner_store = store.clone();
    let task = tokio::spawn(async move {
        let mut runner = ProjectionRunner::new(runner_store, Balances::default())
            .idle_timeout(Duration::from_secs(30));
        runner
            .run(async { stopped.await.unwrap_or(()) })
            .await
            .unwrap();
        runner.into_projection()
    });
    for _ in 0..5 {
        credit(&wallets, "a", 2).await;
    }
    // The live loop is woken by appends, not by the (long) idle timeout.
    let probe = ProjectionRunner::new(store.clone(), Balances::default());
    tokio::time::timeout(Duration::from_secs(10), async {
        while probe.status().await.unwrap().position < 7 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the runner caught up with live appends");
    stop.send(()).unwrap();
    let model = task.await.unwrap();
    assert_eq!(model.balances["a"], 11);
}

/// A handler error rolls the batch back: the checkpoint stays, and the error names the event.
#[derive(Default)]
struct Fussy {
    handled: u64,
}

#[projection(name = "fussy")]
impl Fussy {
    #[on]
    fn credited(&mut self, e: &Credited, meta: &EventMeta) -> Result<(), String> {
        if e.amount == 13 {
            return Err(format!("unlucky amount at {}", meta.position));
        }
        self.handled += 1;
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_handler_leaves_the_checkpoint_and_names_the_event() {
    let store = MemoryStore::new();
    let wallets = Repository::<Wallet, _>::new(store.clone());
    credit(&wallets, "a", 1).await;
    credit(&wallets, "a", 13).await;
    let mut runner = ProjectionRunner::new(store, Fussy::default()).batch_size(10);
    let error = runner.catch_up().await.unwrap_err();
    match &error {
        ProjectionError::Handler {
            projection,
            event_type,
            position,
            ..
        } => {
            assert_eq!(
                (*projection, event_type.as_str(), *position),
                ("fussy", "Credited", 3)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(runner.status().await.unwrap().position, 0);
}
