//! Faults and bad data: racing writers on the memory store.

use std::collections::BTreeMap;
use std::sync::Arc;

use annals::{aggregate, Command, Event, Events, ExecuteError, Repository};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// The domain: a tally whose additions record the total they were decided on, so a replay
// exposes a lost update.

#[derive(Debug, Clone, PartialEq, Eq, Event, Serialize, Deserialize)]
struct Opened {}

#[derive(Debug, Clone, PartialEq, Eq, Event, Serialize, Deserialize)]
struct Added {
    by: u64,
    seen: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Events)]
enum TallyEvent {
    Opened(Opened),
    Added(Added),
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Tally)]
struct Open {
    #[command(id)]
    tally: String,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Tally)]
struct Add {
    #[command(id)]
    tally: String,
    by: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    total: u64,
    additions: u64,
    /// Additions decided on a total other than the one they were applied to.
    lost_updates: u64,
}

#[aggregate(name = "tally", id = String, event = TallyEvent, error = Never)]
impl Tally {
    #[command(create)]
    fn open(&self, _: Open) -> Result<Opened, Never> {
        Ok(Opened {})
    }

    #[command]
    async fn add(&self, cmd: Add) -> Result<Added, Never> {
        Ok(Added {
            by: cmd.by,
            seen: self.total,
        })
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {}

    #[apply]
    fn added(&mut self, e: &Added) {
        if e.seen != self.total {
            self.lost_updates += 1;
        }
        self.total += e.by;
        self.additions += 1;
    }
}

async fn open<S: annals::store::EventStore>(repo: &Repository<Tally, S>, tally: &str) {
    repo.execute(Open {
        tally: tally.to_owned(),
    })
    .await
    .unwrap_or_else(|e| panic!("opening {tally}: {e}"));
}

// ---------------------------------------------------------------------------------------
// The memory store races like a database.

/// 16 tasks on one stream with a single attempt each, on `MemoryStore`: writers that
/// loaded the same version conflict (so users can test their conflict handling in memory),
/// and the winners' updates are all there.
#[tokio::test]
async fn memory_store_writers_conflict() {
    const WRITERS: u64 = 16;
    let store = annals::MemoryStore::new();
    let repo = Repository::<Tally, _>::new(store.clone()).max_attempts(1);
    open(&repo, "race").await;
    let start = Arc::new(tokio::sync::Barrier::new(usize::try_from(WRITERS).unwrap()));
    let writers: Vec<_> = (1..=WRITERS)
        .map(|by| {
            let repo = repo.clone();
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let result = repo
                    .execute(Add {
                        tally: "race".to_owned(),
                        by,
                    })
                    .await;
                (by, result)
            })
        })
        .collect();
    let mut applied = BTreeMap::new();
    let mut conflicts = 0;
    for writer in writers {
        match writer.await.expect("writer panicked") {
            (by, Ok(executed)) => assert_eq!(applied.insert(executed.version, by), None),
            (_, Err(ExecuteError::Conflict { attempts: 1, .. })) => conflicts += 1,
            (by, Err(e)) => panic!("adding {by} failed: {e}"),
        }
    }
    assert!(conflicts > 0, "16 racing writers and not one conflict");
    assert!(!applied.is_empty());
    let loaded = repo.load(&"race".to_owned()).await.expect("loading");
    assert_eq!(
        loaded.state,
        Tally {
            total: applied.values().sum(),
            additions: applied.len() as u64,
            lost_updates: 0,
        }
    );
}
