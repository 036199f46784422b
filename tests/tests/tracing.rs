//! With the `tracing` feature, commands, loads, appends and projection batches are spans
//! whose fields say what happened.
#![cfg(feature = "tracing")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use annals::{projection, MemoryStore, ProjectionRunner, Repository};
use annals_examples::bank::{Account, Deposit, Deposited, OpenAccount};

#[derive(Default)]
struct Deposits(u64);

#[projection(name = "deposits")]
impl Deposits {
    #[on]
    fn deposited(&mut self, e: &Deposited) {
        self.0 += e.amount;
    }
}

/// Everything the subscriber writes, for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn commands_loads_appends_and_batches_are_spans() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = MemoryStore::new();
    let accounts = Repository::<Account, _>::new(store.clone());
    accounts
        .execute(OpenAccount {
            account: "ada".into(),
            owner: "Ada".into(),
        })
        .await
        .unwrap();
    accounts
        .execute(Deposit {
            account: "ada".into(),
            amount: 5,
        })
        .await
        .unwrap();
    let mut runner = ProjectionRunner::new(store.clone(), Deposits::default());
    runner.catch_up().await.unwrap();
    assert_eq!(runner.projection().0, 5);

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for expected in [
        "annals.execute",
        "annals.stream_type=\"Account\"",
        "annals.stream_id=\"ada\"",
        "annals.attempts=1",
        "annals.conflicts=0",
        "annals.load",
        "annals.append",
        "annals.events=1",
        "annals.projection.batch",
        "annals.from=0",
        "annals.lag=0",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
}
