//! Projections on PostgreSQL: read models written in the projection's transaction
//! (`annals::PgTx`), exactly once; live wake-ups by NOTIFY; one active runner among several
//! (advisory-lock lease) and takeover when the active one dies mid-batch, in-process and from
//! a killed child process.
//!
//! What projections do on every store (catch-up, checkpoints, rebuild, status, leases,
//! wake-ups, inline) is the conformance suite's; here is what PostgreSQL adds.
//!
//! Each test works in a fresh schema, dropped at the end. PostgreSQL unreachable (at
//! `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`) fails the tests.
#![cfg(feature = "postgres")]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::store::{CheckpointStore, EventLog, LeaseStore, TxStore};
use annals::{
    aggregate, projection, Command, Event, EventMeta, Events, PgStore, PgTx, ProjectionError,
    ProjectionRunner, Repository, Uuid,
};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------------------
// The domain: accounts and customers, two aggregates.

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Opened {
    owner: String,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Deposited {
    amount: i64,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Withdrawn {
    amount: i64,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Noted {
    text: String,
}

#[derive(Debug, Clone, PartialEq, Events)]
enum AccountEvent {
    Opened(Opened),
    Deposited(Deposited),
    Withdrawn(Withdrawn),
    Noted(Noted),
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Registered {
    name: String,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Renamed {
    name: String,
}

#[derive(Debug, Clone, PartialEq, Events)]
enum CustomerEvent {
    Registered(Registered),
    Renamed(Renamed),
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct Deposit {
    #[command(id)]
    account: String,
    amount: i64,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct Withdraw {
    #[command(id)]
    account: String,
    amount: i64,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct Note {
    #[command(id)]
    account: String,
    text: String,
}

#[derive(Default)]
struct Account {
    opened: bool,
}

#[aggregate(id = String, event = AccountEvent, error = Never)]
impl Account {
    /// Opens the account on its first deposit.
    #[command(any)]
    fn deposit(&self, cmd: Deposit) -> Result<Vec<AccountEvent>, Never> {
        let mut events = Vec::new();
        if !self.opened {
            events.push(
                Opened {
                    owner: format!("owner of {}", cmd.account),
                }
                .into(),
            );
        }
        events.push(Deposited { amount: cmd.amount }.into());
        Ok(events)
    }

    #[command]
    fn withdraw(&self, cmd: Withdraw) -> Result<Withdrawn, Never> {
        Ok(Withdrawn { amount: cmd.amount })
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
    fn deposited(&mut self, _: &Deposited) {}

    #[apply]
    fn withdrawn(&mut self, _: &Withdrawn) {}

    #[apply]
    fn noted(&mut self, _: &Noted) {}
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Customer)]
struct Register {
    #[command(id)]
    customer: String,
    name: String,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Customer)]
struct Rename {
    #[command(id)]
    customer: String,
    name: String,
}

#[derive(Default)]
struct Customer;

#[aggregate(id = String, event = CustomerEvent, error = Never)]
impl Customer {
    #[command(create)]
    fn register(&self, cmd: Register) -> Result<Registered, Never> {
        Ok(Registered { name: cmd.name })
    }

    #[command]
    fn rename(&self, cmd: Rename) -> Result<Renamed, Never> {
        Ok(Renamed { name: cmd.name })
    }

    #[apply]
    fn registered(&mut self, _: &Registered) {}

    #[apply]
    fn renamed(&mut self, _: &Renamed) {}
}

// ---------------------------------------------------------------------------------------
// Read models, in tables of the store's schema, written in the projection's transaction.

/// Balances per account and names per customer; skips `Noted`. Refuses a deposit of
/// `refuse` (to test that a failing handler rolls its batch back).
struct Ledger {
    schema: String,
    refuse: Option<i64>,
}

#[projection(name = "ledger")]
impl Ledger {
    #[on]
    async fn opened(
        &mut self,
        e: &Opened,
        meta: &EventMeta,
        tx: &mut PgTx,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO {}.ledger (account, owner, balance, events) VALUES ($1, $2, 0, 1)",
            self.schema
        );
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(&meta.stream_id)
            .bind(&e.owner)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    #[on]
    async fn deposited(
        &mut self,
        e: &Deposited,
        meta: &EventMeta,
        tx: &mut PgTx,
    ) -> Result<(), BoxError> {
        if self.refuse == Some(e.amount) {
            return Err(format!("refusing a deposit of {}", e.amount).into());
        }
        self.add(&meta.stream_id, e.amount, tx).await?;
        Ok(())
    }

    #[on]
    async fn withdrawn(
        &mut self,
        e: &Withdrawn,
        meta: &EventMeta,
        tx: &mut PgTx,
    ) -> Result<(), sqlx::Error> {
        self.add(&meta.stream_id, -e.amount, tx).await
    }

    #[on]
    async fn registered(
        &mut self,
        e: &Registered,
        meta: &EventMeta,
        tx: &mut PgTx,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO {}.customers (customer, name, renames) VALUES ($1, $2, 0)",
            self.schema
        );
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(&meta.stream_id)
            .bind(&e.name)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    #[on]
    async fn renamed(
        &mut self,
        e: &Renamed,
        meta: &EventMeta,
        tx: &mut PgTx,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "UPDATE {}.customers SET name = $2, renames = renames + 1 WHERE customer = $1",
            self.schema
        );
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(&meta.stream_id)
            .bind(&e.name)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    #[reset]
    async fn truncate(&mut self, tx: &mut PgTx) -> Result<(), sqlx::Error> {
        let sql = format!("TRUNCATE {0}.ledger, {0}.customers", self.schema);
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

impl Ledger {
    fn new(schema: &str) -> Self {
        Ledger {
            schema: schema.to_owned(),
            refuse: None,
        }
    }

    async fn add(&self, account: &str, amount: i64, tx: &mut PgTx) -> Result<(), sqlx::Error> {
        let sql = format!(
            "UPDATE {}.ledger SET balance = balance + $2, events = events + 1 \
             WHERE account = $1",
            self.schema
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(account)
            .bind(amount)
            .execute(&mut **tx)
            .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            // The account's `Opened` was not applied first.
            Err(sqlx::Error::RowNotFound)
        }
    }
}

/// Records every event it applies, with the runner that applied it: the primary key on
/// `position` makes a second application fail. Optionally blocks mid-batch (see
/// [`StopSwitch`]).
struct Applied {
    schema: String,
    runner: i32,
    stop: Option<Arc<StopSwitch>>,
}

#[projection(name = "applied")]
impl Applied {
    #[on]
    async fn opened(
        &mut self,
        _: &Opened,
        meta: &EventMeta,
        tx: &mut PgTx,
    ) -> Result<(), sqlx::Error> {
        self.record(meta, 0, tx).await
    }

    #[on]
    async fn deposited(
        &mut self,
        e: &Deposited,
        meta: &EventMeta,
        tx: &mut PgTx,
    ) -> Result<(), sqlx::Error> {
        self.record(meta, e.amount, tx).await
    }
}

impl Applied {
    fn new(schema: &str, runner: i32) -> Self {
        Applied {
            schema: schema.to_owned(),
            runner,
            stop: None,
        }
    }

    async fn record(
        &self,
        meta: &EventMeta,
        amount: i64,
        tx: &mut PgTx,
    ) -> Result<(), sqlx::Error> {
        let schema = &self.schema;
        let position = i64::try_from(meta.position).expect("position fits bigint");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {schema}.applied (position, runner, stream_id) VALUES ($1, $2, $3)"
        )))
        .bind(position)
        .bind(self.runner)
        .bind(&meta.stream_id)
        .execute(&mut **tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {schema}.totals (account, balance) VALUES ($1, $2) \
             ON CONFLICT (account) DO UPDATE SET balance = totals.balance + $2"
        )))
        .bind(&meta.stream_id)
        .bind(amount)
        .execute(&mut **tx)
        .await?;
        if let Some(stop) = &self.stop {
            if meta.position >= stop.from {
                // Rows written by this open batch: past the committed checkpoint.
                let in_batch: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {schema}.applied WHERE position > coalesce( \
                     (SELECT position FROM {schema}.annals_checkpoints WHERE name = 'applied'), 0)"
                )))
                .fetch_one(&mut **tx)
                .await?;
                if in_batch >= 2 && stop.fire(self.runner, meta.position) {
                    // Hang mid-batch, holding the lease and the open transaction, until killed.
                    std::future::pending::<()>().await;
                }
            }
        }
        Ok(())
    }
}

/// Makes the first runner that reaches position `from`, with at least two events of its
/// open batch written, hang there: the "crash" the takeover tests kill.
struct StopSwitch {
    from: u64,
    fired: AtomicBool,
    on_fire: Box<dyn Fn(i32, u64) + Send + Sync>,
}

impl StopSwitch {
    fn new(from: u64, on_fire: impl Fn(i32, u64) + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(StopSwitch {
            from,
            fired: AtomicBool::new(false),
            on_fire: Box::new(on_fire),
        })
    }

    fn fire(&self, runner: i32, position: u64) -> bool {
        if self.fired.swap(true, Ordering::SeqCst) {
            return false;
        }
        (self.on_fire)(runner, position);
        true
    }
}

// ---------------------------------------------------------------------------------------
// Set-up.

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A store on `schema` with its own pool.
async fn connect(schema: &str, connections: u32) -> PgStore {
    let url = database_url();
    PgStore::options()
        .schema(schema)
        .max_connections(connections)
        .open(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {url}: {e} ({e:?})"))
}

/// Runs `case` with a fresh schema name (the case's first store creates it), then drops the
/// schema, even when the case panicked; re-raises the panic.
async fn with_schema<F, Fut>(case: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let schema = format!("pgproj_{}", Uuid::new_v4().simple());
    let outcome = tokio::spawn(case(schema.clone())).await;
    let url = database_url();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {url}: {e}"));
    sqlx::query("SET lock_timeout = '10s'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("dropping schema {schema}: {e}"));
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("the case did not finish: {error}"),
        }
    }
}

/// The read-model tables, in the store's schema.
async fn create_tables(store: &PgStore) {
    let s = store.schema();
    for sql in [
        format!(
            "CREATE TABLE {s}.ledger (account text PRIMARY KEY, owner text NOT NULL, \
             balance bigint NOT NULL, events bigint NOT NULL)"
        ),
        format!(
            "CREATE TABLE {s}.customers (customer text PRIMARY KEY, name text NOT NULL, \
             renames integer NOT NULL)"
        ),
        format!(
            "CREATE TABLE {s}.applied (position bigint PRIMARY KEY, runner integer NOT NULL, \
             stream_id text NOT NULL)"
        ),
        format!("CREATE TABLE {s}.totals (account text PRIMARY KEY, balance bigint NOT NULL)"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .execute(store.pool())
            .await
            .unwrap();
    }
}

/// Spawned tasks, aborted when dropped (so a failing case does not leave runners behind).
struct Tasks<T>(Vec<Option<JoinHandle<T>>>);

impl<T> Default for Tasks<T> {
    fn default() -> Self {
        Tasks(Vec::new())
    }
}

impl<T> Tasks<T> {
    fn push(&mut self, task: JoinHandle<T>) -> usize {
        self.0.push(Some(task));
        self.0.len() - 1
    }

    fn take(&mut self, index: usize) -> JoinHandle<T> {
        self.0[index].take().expect("task taken once")
    }
}

impl<T> Drop for Tasks<T> {
    fn drop(&mut self) {
        for task in self.0.iter().flatten() {
            task.abort();
        }
    }
}

/// What the ledger should read after some commands, kept beside them.
struct World {
    accounts: Repository<Account, PgStore>,
    customers: Repository<Customer, PgStore>,
    /// account -> (owner, balance, events applied)
    ledger: BTreeMap<String, (String, i64, i64)>,
    /// customer -> (name, renames)
    names: BTreeMap<String, (String, i32)>,
}

impl World {
    fn new(store: &PgStore) -> Self {
        World {
            accounts: Repository::new(store.clone()),
            customers: Repository::new(store.clone()),
            ledger: BTreeMap::new(),
            names: BTreeMap::new(),
        }
    }

    async fn deposit(&mut self, account: &str, amount: i64) {
        self.accounts
            .execute(Deposit {
                account: account.into(),
                amount,
            })
            .await
            .unwrap();
        let entry = self
            .ledger
            .entry(account.to_owned())
            .or_insert_with(|| (format!("owner of {account}"), 0, 1));
        entry.1 += amount;
        entry.2 += 1;
    }

    async fn withdraw(&mut self, account: &str, amount: i64) {
        self.accounts
            .execute(Withdraw {
                account: account.into(),
                amount,
            })
            .await
            .unwrap();
        let entry = self.ledger.get_mut(account).unwrap();
        entry.1 -= amount;
        entry.2 += 1;
    }

    async fn note(&mut self, account: &str) {
        self.accounts
            .execute(Note {
                account: account.into(),
                text: "skipped by the ledger".into(),
            })
            .await
            .unwrap();
    }

    async fn register(&mut self, customer: &str, name: &str) {
        self.customers
            .execute(Register {
                customer: customer.into(),
                name: name.into(),
            })
            .await
            .unwrap();
        self.names.insert(customer.into(), (name.into(), 0));
    }

    async fn rename(&mut self, customer: &str, name: &str) {
        self.customers
            .execute(Rename {
                customer: customer.into(),
                name: name.into(),
            })
            .await
            .unwrap();
        let entry = self.names.get_mut(customer).unwrap();
        entry.0 = name.into();
        entry.1 += 1;
    }

    async fn assert_read_model(&self, store: &PgStore) {
        let (ledger, names) = read_ledger(store).await;
        assert_eq!(ledger, self.ledger, "ledger table");
        assert_eq!(names, self.names, "customers table");
    }
}

type LedgerRows = (
    BTreeMap<String, (String, i64, i64)>,
    BTreeMap<String, (String, i32)>,
);

async fn read_ledger(store: &PgStore) -> LedgerRows {
    let s = store.schema();
    let ledger = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT account, owner, balance, events FROM {s}.ledger"
    )))
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
    .collect();
    let names = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT customer, name, renames FROM {s}.customers"
    )))
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2))))
    .collect();
    (ledger, names)
}

async fn event_positions(store: &PgStore) -> Vec<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT position FROM {}.annals_events ORDER BY position",
        store.schema()
    )))
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// `(position, runner)` of every applied event, in position order.
async fn applied_rows(store: &PgStore) -> Vec<(i64, i32)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT position, runner FROM {}.applied ORDER BY position",
        store.schema()
    )))
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// Runs of consecutive positions applied by one runner: `(runner, first, last)`.
fn segments(rows: &[(i64, i32)]) -> Vec<(i32, i64, i64)> {
    let mut out: Vec<(i32, i64, i64)> = Vec::new();
    for &(position, runner) in rows {
        match out.last_mut() {
            Some(last) if last.0 == runner => last.2 = position,
            _ => out.push((runner, position, position)),
        }
    }
    out
}

/// Total deposited per account, from the events themselves.
async fn deposits_per_account(store: &PgStore) -> BTreeMap<String, i64> {
    let events = store
        .read_all(0, usize::MAX, &annals::store::EventFilter::all())
        .await
        .unwrap();
    let mut totals = BTreeMap::new();
    for event in events {
        let amount = match event.meta.event_type.as_str() {
            "Deposited" => {
                serde_json::from_str::<Deposited>(&event.payload)
                    .unwrap()
                    .amount
            }
            _ => 0,
        };
        *totals.entry(event.meta.stream_id).or_insert(0) += amount;
    }
    totals
}

async fn totals(store: &PgStore) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(format!(
        "SELECT account, balance FROM {}.totals",
        store.schema()
    )))
    .fetch_all(store.pool())
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Waits until projection `name`'s checkpoint reaches the head and the head is `head`.
async fn caught_up(store: &PgStore, name: &str, head: u64, within: Duration) {
    let outcome = tokio::time::timeout(within, async {
        loop {
            let position = store.checkpoint(name).await.unwrap();
            if position == head && store.head().await.unwrap() == head {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if outcome.is_err() {
        panic!(
            "projection {name} did not reach {head} within {within:?}: checkpoint {}",
            store.checkpoint(name).await.unwrap()
        );
    }
}

/// `writers` tasks each depositing `each` times on three accounts of its own, pausing
/// between commands.
fn spawn_writers(store: &PgStore, writers: usize, each: usize, pause: Duration) -> Tasks<()> {
    let mut tasks = Tasks::default();
    for w in 0..writers {
        let accounts = Repository::<Account, _>::new(store.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..each {
                accounts.execute(writer_deposit(w, k)).await.unwrap();
                tokio::time::sleep(pause).await;
            }
        }));
    }
    tasks
}

/// Writer `w`'s `k`th deposit: over three accounts of its own, amounts telling them apart.
fn writer_deposit(w: usize, k: usize) -> Deposit {
    Deposit {
        account: format!("w{w}-{}", k % 3),
        amount: i64::try_from(w * 1000 + k + 1).unwrap(),
    }
}

/// The deposits of [`spawn_writers`] without a pause, made one after the other: their
/// positions follow their commits, so the log reads in position order. (Concurrent writers
/// may take positions in one order and transaction ids in the other, and a reader follows
/// the transaction ids.)
async fn write_in_order(store: &PgStore, writers: usize, each: usize) {
    let accounts = Repository::<Account, _>::new(store.clone());
    for w in 0..writers {
        for k in 0..each {
            accounts.execute(writer_deposit(w, k)).await.unwrap();
        }
    }
}

async fn join_all(mut tasks: Tasks<()>) {
    for i in 0..tasks.0.len() {
        tasks.take(i).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// 1. Catch-up, exactly once.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_applies_each_event_once_in_the_read_model_transaction() {
    with_schema(|schema| async move {
        let store = connect(&schema, 4).await;
        create_tables(&store).await;
        let mut world = World::new(&store);
        for (account, amount) in ["a", "b", "c"].iter().cycle().zip((10..=120).step_by(10)) {
            world.deposit(account, amount).await;
        }
        world.withdraw("a", 5).await;
        world.note("a").await;
        world.register("c1", "Ann").await;
        world.note("b").await;
        world.register("c2", "Bob").await;
        world.rename("c1", "Anna").await;
        world.deposit("b", 7).await;
        world.note("c").await;
        let head = store.head().await.unwrap();
        assert_eq!(head, 23);

        let mut runner = ProjectionRunner::new(store.clone(), Ledger::new(&schema)).batch_size(4);
        let mut reports = Vec::new();
        let done = runner.catch_up_with(|p| reports.push(p)).await.unwrap();
        // Every event but the three notes, in batches of 4, reported after each.
        assert_eq!((done.handled, done.position, done.head), (20, head, head));
        assert!(reports.len() >= 5, "{reports:?}");
        assert!(reports.windows(2).all(|w| w[0].position < w[1].position));
        world.assert_read_model(&store).await;
        assert_eq!(runner.status().await.unwrap().lag(), 0);

        // Again: nothing to do, nothing changes.
        let again = runner.catch_up().await.unwrap();
        assert_eq!((again.handled, again.position), (0, head));
        world.assert_read_model(&store).await;

        // A handler error rolls back the whole batch: the deposit before it (same batch)
        // is not in the read model and the checkpoint has not moved.
        world.deposit("a", 5).await;
        world.note("a").await;
        world.deposit("b", 13).await;
        let mut refusing = ProjectionRunner::new(
            store.clone(),
            Ledger {
                refuse: Some(13),
                ..Ledger::new(&schema)
            },
        )
        .batch_size(4);
        let error = refusing.catch_up().await.unwrap_err();
        match &error {
            ProjectionError::Handler {
                projection,
                event_type,
                position,
                source,
            } => {
                assert_eq!(
                    (*projection, event_type.as_str(), *position),
                    ("ledger", "Deposited", 26)
                );
                assert_eq!(source.to_string(), "refusing a deposit of 13");
            }
            other => panic!("unexpected {other:?}"),
        }
        let (ledger, _) = read_ledger(&store).await;
        assert_eq!(
            ledger["a"].1,
            world.ledger["a"].1 - 5,
            "the +5 was rolled back"
        );
        assert_eq!(ledger["b"].1, world.ledger["b"].1 - 13);
        assert_eq!(refusing.status().await.unwrap().position, head);
        assert_eq!(refusing.status().await.unwrap().lag(), 3);

        // Fixed: the batch is applied once.
        assert_eq!(runner.catch_up().await.unwrap().handled, 2);
        world.assert_read_model(&store).await;
        assert_eq!(runner.status().await.unwrap().position, 26);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 2. Live, woken by NOTIFY, under concurrent writers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_is_woken_by_notify_and_applies_concurrent_appends_once() {
    with_schema(|schema| async move {
        let store = connect(&schema, 8).await;
        create_tables(&store).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut runner = ProjectionRunner::new(connect(&schema, 3).await, Applied::new(&schema, 1))
            .batch_size(7)
            // Only a notification can wake the runner within the test's time limits.
            .idle_timeout(Duration::from_secs(600));
        let mut tasks = Tasks::default();
        let run = tasks.push(tokio::spawn(async move {
            runner.run(async { stopped.await.unwrap_or(()) }).await
        }));

        // The runner found nothing and is waiting; one append must wake it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Repository::<Account, _>::new(store.clone())
            .execute(Deposit {
                account: "first".into(),
                amount: 1,
            })
            .await
            .unwrap();
        caught_up(&store, "applied", 2, Duration::from_secs(5)).await;

        // Four writers at once; the runner follows.
        join_all(spawn_writers(&store, 4, 30, Duration::ZERO)).await;
        let head = store.head().await.unwrap();
        assert_eq!(head, 2 + 4 * (30 + 3));
        caught_up(&store, "applied", head, Duration::from_secs(20)).await;
        stop.send(()).unwrap();
        tasks.take(run).await.unwrap().unwrap();

        let applied = applied_rows(&store).await;
        let positions: Vec<i64> = applied.iter().map(|r| r.0).collect();
        assert_eq!(positions, event_positions(&store).await);
        assert!(applied.iter().all(|r| r.1 == 1));
        assert_eq!(totals(&store).await, deposits_per_account(&store).await);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 3. Scale-out: one active runner among three; takeover when it dies mid-batch.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_runner_takes_over_when_the_active_one_dies_mid_batch() {
    with_schema(|schema| async move {
        let store = connect(&schema, 8).await;
        create_tables(&store).await;
        let (victim_tx, victim_rx) = tokio::sync::oneshot::channel::<(i32, u64)>();
        let victim_tx = Mutex::new(Some(victim_tx));
        let stop = StopSwitch::new(20, move |runner, position| {
            if let Some(tx) = victim_tx.lock().unwrap().take() {
                let _ = tx.send((runner, position));
            }
        });

        // Three runners, each with a pool of its own, started together with the writers.
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let mut runner_stores = BTreeMap::new();
        let mut runners = Tasks::default();
        let mut runner_tasks = BTreeMap::new();
        for id in 1..=3 {
            let runner_store = connect(&schema, 3).await;
            runner_stores.insert(id, runner_store.clone());
            let projection = Applied {
                stop: Some(Arc::clone(&stop)),
                ..Applied::new(&schema, id)
            };
            let mut runner = ProjectionRunner::new(runner_store, projection)
                .batch_size(5)
                .idle_timeout(Duration::from_millis(100));
            let mut shutdown = shutdown_rx.clone();
            let task = runners.push(tokio::spawn(async move {
                runner
                    .run(async move {
                        let _ = shutdown.wait_for(|&stop| stop).await;
                    })
                    .await
            }));
            runner_tasks.insert(id, task);
        }
        let writers = spawn_writers(&store, 3, 25, Duration::from_millis(15));

        // The active runner hangs with part of a batch written; kill it: abort its task
        // (dropping its lease connection) and close its pool (rolling back the batch).
        let (victim, at) = tokio::time::timeout(Duration::from_secs(30), victim_rx)
            .await
            .expect("the active runner reached the stop position")
            .unwrap();
        let checkpoint_at_kill = store.checkpoint("applied").await.unwrap();
        assert!(
            checkpoint_at_kill >= 5 && checkpoint_at_kill < at,
            "{checkpoint_at_kill} {at}"
        );
        // The open batch is not visible; while the victim hangs, nobody else works.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let committed = applied_rows(&store).await;
        assert_eq!(committed.len() as u64, checkpoint_at_kill);
        assert!(committed.iter().all(|r| r.1 == victim), "{committed:?}");

        let task = runners.take(runner_tasks[&victim]);
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        let victim_store = runner_stores.remove(&victim).unwrap();
        victim_store.pool().close().await;
        drop(victim_store);

        join_all(writers).await;
        let head = store.head().await.unwrap();
        assert_eq!(head, 3 * (25 + 3));
        caught_up(&store, "applied", head, Duration::from_secs(30)).await;
        shutdown.send(true).unwrap();
        for (id, index) in runner_tasks {
            if id != victim {
                runners.take(index).await.unwrap().unwrap();
            }
        }

        // Every event once, positions exactly the store's; one runner at a time: the victim
        // up to its last committed batch, then a single successor.
        let applied = applied_rows(&store).await;
        let positions: Vec<i64> = applied.iter().map(|r| r.0).collect();
        assert_eq!(positions, event_positions(&store).await);
        let runs = segments(&applied);
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[0].0, victim);
        assert_eq!(runs[0].2, i64::try_from(checkpoint_at_kill).unwrap());
        assert_ne!(runs[1].0, victim);
        assert_eq!(totals(&store).await, deposits_per_account(&store).await);
    })
    .await;
}

/// The child process of [`a_killed_process_is_replaced_without_loss_or_duplicates`]: runs
/// the `applied` projection as runner 99 and hangs mid-batch at position 12, printing
/// [`CHILD_MARKER`]. Does nothing unless started by that test (the environment variable
/// names the schema).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process_runner() {
    let Ok(schema) = std::env::var(CHILD_SCHEMA) else {
        return;
    };
    let store = connect(&schema, 3).await;
    let stop = StopSwitch::new(12, |_, position| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{CHILD_MARKER} {position}").unwrap();
        out.flush().unwrap();
    });
    let projection = Applied {
        stop: Some(stop),
        ..Applied::new(&schema, CHILD_RUNNER)
    };
    ProjectionRunner::new(store, projection)
        .batch_size(5)
        .idle_timeout(Duration::from_millis(100))
        .run(std::future::pending())
        .await
        .unwrap();
}

const CHILD_SCHEMA: &str = "ANNALS_PG_PROJECTIONS_CHILD_SCHEMA";
const CHILD_MARKER: &str = "annals-child-runner: hanging mid-batch at position";
const CHILD_RUNNER: i32 = 99;

/// Kills the child process when dropped.
struct ChildProcess(Child);

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_is_replaced_without_loss_or_duplicates() {
    with_schema(|schema| async move {
        let store = connect(&schema, 8).await;
        create_tables(&store).await;
        // In position order, so that the child's batches end at positions 5 and 10.
        write_in_order(&store, 2, 10).await;
        assert_eq!(store.head().await.unwrap(), 26);

        // The child takes the lease (nothing else runs yet) and hangs in its third batch.
        let mut child = ChildProcess(
            Process::new(std::env::current_exe().unwrap())
                .args([
                    "child_process_runner",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_SCHEMA, &schema)
                .env("DATABASE_URL", database_url())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let (blocked_tx, blocked_rx) = tokio::sync::oneshot::channel::<u64>();
        let output = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut blocked_tx = Some(blocked_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print the test's name on the same line first.
                if let Some(at) = line.find(CHILD_MARKER) {
                    let position = line[at + CHILD_MARKER.len()..].trim().parse();
                    if let (Some(tx), Ok(position)) = (blocked_tx.take(), position) {
                        let _ = tx.send(position);
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let at = match tokio::time::timeout(Duration::from_secs(30), blocked_rx).await {
            Ok(Ok(at)) => at,
            _ => panic!(
                "the child runner did not hang mid-batch; its output:\n{}",
                output.lock().unwrap().join("\n")
            ),
        };
        assert_eq!(at, 12);

        // Two standby runners in this process, and more writers; nothing moves while the
        // child holds the lease.
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let mut runners = Tasks::default();
        for id in 1..=2 {
            let projection = Applied::new(&schema, id);
            let mut runner = ProjectionRunner::new(connect(&schema, 3).await, projection)
                .batch_size(5)
                .idle_timeout(Duration::from_millis(100));
            let mut shutdown = shutdown_rx.clone();
            runners.push(tokio::spawn(async move {
                runner
                    .run(async move {
                        let _ = shutdown.wait_for(|&stop| stop).await;
                    })
                    .await
            }));
        }
        let writers = spawn_writers(&store, 2, 10, Duration::from_millis(5));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(store.checkpoint("applied").await.unwrap(), 10);
        assert_eq!(applied_rows(&store).await.len(), 10);

        // Kill -9 mid-batch: PostgreSQL rolls the batch back and frees the lease.
        child.0.kill().unwrap();
        child.0.wait().unwrap();

        join_all(writers).await;
        let head = store.head().await.unwrap();
        assert_eq!(head, 26 + 20);
        caught_up(&store, "applied", head, Duration::from_secs(30)).await;
        shutdown.send(true).unwrap();
        for i in 0..2 {
            runners.take(i).await.unwrap().unwrap();
        }

        let applied = applied_rows(&store).await;
        let positions: Vec<i64> = applied.iter().map(|r| r.0).collect();
        assert_eq!(positions, event_positions(&store).await);
        let runs = segments(&applied);
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[0], (CHILD_RUNNER, 1, 10));
        assert_ne!(runs[1].0, CHILD_RUNNER);
        assert_eq!(totals(&store).await, deposits_per_account(&store).await);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 4. Rebuild: the reset hook truncates the tables in the rebuild's transaction.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_truncates_through_the_reset_hook_and_replays() {
    with_schema(|schema| async move {
        let store = connect(&schema, 4).await;
        create_tables(&store).await;
        let mut world = World::new(&store);
        for account in ["x", "y"].iter().cycle().take(9) {
            world.deposit(account, 3).await;
        }
        world.register("c", "Cy").await;
        world.withdraw("x", 1).await;
        world.note("x").await;
        let head = store.head().await.unwrap();
        assert_eq!(head, 14);
        let mut runner = ProjectionRunner::new(store.clone(), Ledger::new(&schema)).batch_size(3);
        runner.catch_up().await.unwrap();
        world.assert_read_model(&store).await;

        // Damage the read model; a rebuild truncates it (the stray row goes) and replays.
        let s = &schema;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {s}.ledger SET balance = -1"
        )))
        .execute(store.pool())
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {s}.ledger (account, owner, balance, events) VALUES ('stray', '', 0, 0)"
        )))
        .execute(store.pool())
        .await
        .unwrap();
        let done = runner.rebuild(|_| {}).await.unwrap();
        assert_eq!((done.handled, done.position, done.head), (13, head, head));
        world.assert_read_model(&store).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 5. Inline: the projection runs in the append's transaction, on the events as stored.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_projections_see_the_stored_events_in_the_append_transaction() {
    with_schema(|schema| async move {
        let store = connect(&schema, 4).await;
        create_tables(&store).await;
        let inline = Arc::new(tokio::sync::Mutex::new(Applied::new(&schema, 7)));
        let accounts = Repository::<Account, _>::new(store.clone()).with_inline(inline);
        for amount in [5, 6] {
            accounts
                .execute(Deposit {
                    account: "i".into(),
                    amount,
                })
                .await
                .unwrap();
        }
        // Positions handed to the projection are the stored ones, visible with the events.
        let applied = applied_rows(&store).await;
        assert_eq!(applied, [(1, 7), (2, 7), (3, 7)]);
        assert_eq!(event_positions(&store).await, [1, 2, 3]);
        assert_eq!(totals(&store).await["i"], 11);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 6. The pieces the runner relies on: checkpoints in the transaction, and the lease.

/// A transaction sees its own checkpoint moves, and a checkpoint past `bigint` is refused.
/// (The compare-and-set every store shares is the conformance suite's; `MemoryStore`
/// compares with the committed checkpoint only, so the first part is not shared yet.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_sees_its_own_checkpoint_moves_within_bigint() {
    with_schema(|schema| async move {
        let store = connect(&schema, 4).await;
        let mut tx = store.begin().await.unwrap();
        assert!(store
            .advance_checkpoint(&mut tx, "cas", 0, 5)
            .await
            .unwrap());
        store.commit(tx).await.unwrap();

        let mut tx = store.begin().await.unwrap();
        assert!(matches!(
            store.advance_checkpoint(&mut tx, "cas", 5, u64::MAX).await,
            Err(annals::StoreError::OutOfRange {
                value: u64::MAX,
                ..
            })
        ));
        assert!(store
            .advance_checkpoint(&mut tx, "cas", 5, 0)
            .await
            .unwrap());
        assert!(store
            .advance_checkpoint(&mut tx, "cas", 0, 2)
            .await
            .unwrap());
        store.commit(tx).await.unwrap();
        assert_eq!(store.checkpoint("cas").await.unwrap(), 2);
    })
    .await;
}

/// The session holding `projection`'s lease in `schema`: the lock key is FNV-1a of
/// "annals projection <schema>/<projection>" (stable across versions and processes).
async fn lease_holder(store: &PgStore, projection: &str) -> Option<i32> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("annals projection {}/{projection}", store.schema()).bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let (high, low) = (hash >> 32, hash & 0xffff_ffff);
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1",
    )
    .bind(i64::try_from(high).unwrap())
    .bind(i64::try_from(low).unwrap())
    .fetch_optional(store.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_exclusive_across_pools_lost_with_its_connection_and_freed_on_drop() {
    with_schema(|schema| async move {
        let a = connect(&schema, 2).await;
        let b = connect(&schema, 2).await;
        let mut lease = a.try_lease("p").await.unwrap().expect("free at first");
        assert_eq!(lease.projection(), "p");
        assert!(b.try_lease("p").await.unwrap().is_none());
        assert!(
            a.try_lease("p").await.unwrap().is_none(),
            "one lease per projection"
        );
        let mut other = a.try_lease("q").await.unwrap().expect("per projection");
        assert!(a.lease_alive(&mut lease).await.unwrap());
        assert!(a.lease_alive(&mut other).await.unwrap());

        // The holder's connection dies: the lease reports it, and another can take it.
        let holder = lease_holder(&a, "p").await.expect("the lock is held");
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(holder)
            .fetch_one(a.pool())
            .await
            .unwrap();
        assert!(terminated);
        assert!(!a.lease_alive(&mut lease).await.unwrap());
        assert!(
            a.lease_alive(&mut other).await.unwrap(),
            "other leases are unaffected"
        );
        let taken = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(lease) = b.try_lease("p").await.unwrap() {
                    return lease;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the lock went with the session");
        drop(lease);

        // Dropping a lease releases it.
        drop(taken);
        tokio::time::timeout(Duration::from_secs(5), async {
            while a.try_lease("p").await.unwrap().is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the lock went with the dropped lease");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_lease_connection_dies_stops_until_a_lease_is_taken_again() {
    with_schema(|schema| async move {
        let store = connect(&schema, 6).await;
        create_tables(&store).await;
        join_all(spawn_writers(&store, 1, 3, Duration::ZERO)).await;

        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let mut runners = Tasks::default();
        for id in 1..=2 {
            let mut runner =
                ProjectionRunner::new(connect(&schema, 3).await, Applied::new(&schema, id))
                    .batch_size(3)
                    .idle_timeout(Duration::from_millis(100));
            let mut shutdown = shutdown_rx.clone();
            runners.push(tokio::spawn(async move {
                runner
                    .run(async move {
                        let _ = shutdown.wait_for(|&stop| stop).await;
                    })
                    .await
            }));
        }
        caught_up(&store, "applied", 6, Duration::from_secs(10)).await;
        let first = applied_rows(&store).await[0].1;

        // The active runner's lease connection dies while the runner itself lives on.
        let holder = lease_holder(&store, "applied")
            .await
            .expect("a runner holds the lease");
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(holder)
            .execute(store.pool())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while lease_holder(&store, "applied")
                .await
                .is_none_or(|pid| pid == holder)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the other runner took the lease");

        // New events: only the new holder applies them; the old one neither works nor fails.
        join_all(spawn_writers(&store, 2, 10, Duration::ZERO)).await;
        let head = store.head().await.unwrap();
        caught_up(&store, "applied", head, Duration::from_secs(10)).await;
        shutdown.send(true).unwrap();
        for i in 0..2 {
            runners.take(i).await.unwrap().unwrap();
        }
        let applied = applied_rows(&store).await;
        let positions: Vec<i64> = applied.iter().map(|r| r.0).collect();
        assert_eq!(positions, event_positions(&store).await);
        // The lease is taken again by either runner: the one whose connection died may win
        // the race on a new connection. Either way one holder at a time applied the events,
        // each once, and the first holder's batches before the loss are kept.
        let runs = segments(&applied);
        assert!(runs.len() <= 2, "{runs:?}");
        assert_eq!((runs[0].0, runs[0].1), (first, 1), "{runs:?}");
        if let [before, after] = runs[..] {
            assert_eq!(before.2, 6, "{runs:?}");
            assert_ne!(after.0, first, "{runs:?}");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Many writers, no common lock: a live projection still gets each position exactly once.

/// 32 writers on streams of their own commit in parallel (no lock spans streams), while a
/// live runner follows the log: every event reaches the read model exactly once (the
/// primary key on `position` refuses a second application), none is skipped, and a
/// command's position is waited for by read-your-writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_writers_and_a_live_projection_apply_each_position_once() {
    with_schema(|schema| async move {
        let store = connect(&schema, 40).await;
        create_tables(&store).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut runner = ProjectionRunner::new(store.clone(), Applied::new(&schema, 1))
            .batch_size(50)
            .idle_timeout(Duration::from_millis(200));
        let live = tokio::spawn(async move {
            runner
                .run(async { stopped.await.unwrap_or(()) })
                .await
                .unwrap();
        });
        join_all(spawn_writers(&store, 32, 15, Duration::ZERO)).await;
        // Read-your-writes on the last command of a writer.
        let accounts = Repository::<Account, _>::new(store.clone());
        let last = accounts
            .execute(Deposit {
                account: "last".to_owned(),
                amount: 1,
            })
            .await
            .unwrap();
        assert!(
            annals::wait_for_checkpoint(&store, "applied", last.position, Duration::from_secs(30))
                .await
                .unwrap(),
            "the live runner passed the last command"
        );
        let expected = event_positions(&store).await;
        tokio::time::timeout(Duration::from_secs(30), async {
            while applied_rows(&store).await.len() < expected.len() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("every event applied");
        stop.send(()).unwrap();
        live.await.unwrap();
        let applied: Vec<i64> = applied_rows(&store)
            .await
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(applied, expected, "each position once, none skipped");
        assert_eq!(expected.len(), 32 * 15 + 32 * 3 + 2);
    })
    .await;
}
