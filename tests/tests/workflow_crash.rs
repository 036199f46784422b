//! The crash proof of the shop's choreography: a child process runs the workflows (the
//! inventory and order reactors, the payment process manager, the notifications read
//! model) live while this process places orders against limited stock and pays some of
//! them, and kills the child with SIGKILL at random moments, restarting it each time. At
//! the end, on SQLite and on PostgreSQL:
//!
//! - every order ends rejected, paid or cancelled, exactly once, by the exact sequence of
//!   events its flow allows;
//! - the stock never goes negative; the reserved units equal the paid orders' units;
//! - one notification per `OutOfStock` event, none duplicated;
//! - every event of an order's flow carries its correlation id, and the causation ids
//!   form the chain placed -> reserved or out of stock -> confirmed or rejected ->
//!   cancelled -> released;
//! - deadlines pending when the child was killed fired after its restart, once.
//!
//! Sizes by environment: `ANNALS_CRASH_ORDERS` (default 200), `ANNALS_CRASH_KILLS`
//! (default 3), `ANNALS_CRASH_RUNS` (default 1). The full proof is 1000 orders, 20 kills,
//! 20 runs: `ANNALS_CRASH_ORDERS=1000 ANNALS_CRASH_KILLS=20 ANNALS_CRASH_RUNS=20`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use annals::store::{EventFilter, EventLog, EventStore, ParkingStore, ProcessStore};
use annals::workflow::Processes;
use annals::{CommitMeta, ProjectionRunner, RecordedEvent, Repository, SqliteStore, Uuid};
use annals_examples::shop::{
    self, AddStock, Inventory, Order, OrderPayment, OutOfStock, PayOrder, PlaceOrder, Workflows,
};

const CHILD_ENV: &str = "ANNALS_CRASH_STORE";
/// The child's runners, by checkpoint name.
const RUNNERS: [&str; 4] = [
    "inventory_policy",
    "order_policy",
    "order_payment",
    "shop_notifications",
];
/// The payment window the child's workflows use (milliseconds).
const PAY_WINDOW_MS: u64 = 300;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small xorshift generator: the seed is printed, so a failing run can be replayed with
/// `ANNALS_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("ANNALS_CRASH_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                u64::try_from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos()
                        % u128::from(u64::MAX),
                )
                .unwrap()
                    | 1
            });
        eprintln!("crash proof seed: {seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---- the child ----

/// Run by the crash tests as their child process (`--ignored --exact crash_child`): runs
/// the shop's workflows live on the store named by `ANNALS_CRASH_STORE` until killed.
#[test]
#[ignore = "the crash tests' child process"]
fn crash_child() {
    let Ok(target) = std::env::var(CHILD_ENV) else {
        panic!("{CHILD_ENV} is not set: this test is the crash tests' child process");
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        if let Some(path) = target.strip_prefix("sqlite:") {
            let store = SqliteStore::open(path).await.unwrap();
            let notes = ProjectionRunner::new(store.clone(), shop::ShopNotifications);
            run_workflows(store, notes).await;
        } else if let Some(schema) = target.strip_prefix("postgres:") {
            #[cfg(feature = "postgres")]
            {
                let store = pg::open(schema).await;
                let notes = ProjectionRunner::new(store.clone(), pg::PgNotes::new(schema));
                run_workflows(store, notes).await;
            }
            #[cfg(not(feature = "postgres"))]
            panic!("built without PostgreSQL: {schema}");
        } else {
            panic!("unknown store {target}");
        }
    });
}

async fn run_workflows<S, P>(store: S, mut notes: ProjectionRunner<P, S>)
where
    S: ProcessStore
        + ParkingStore
        + annals::store::CheckpointStore
        + EventLog
        + annals::store::LeaseStore
        + annals::store::WakeUps,
    P: annals::Projection<S::Tx>,
{
    let flows = Workflows::new(&store).unwrap();
    let idle = Duration::from_millis(50);
    let mut inventory = flows.inventory.idle_timeout(idle);
    let mut orders = flows.orders.idle_timeout(idle);
    let mut payments = flows.payments.idle_timeout(idle);
    notes = notes.idle_timeout(idle);
    let forever = std::future::pending::<()>;
    let (a, b, c, d) = tokio::join!(
        inventory.run(forever()),
        orders.run(forever()),
        payments.run(forever()),
        notes.run(forever()),
    );
    panic!("a workflow stopped: {a:?} {b:?} {c:?} {d:?}");
}

fn spawn_child(target: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash_child", "--nocapture"])
        .env(CHILD_ENV, target)
        .env("SHOP_PAY_WINDOW_MS", PAY_WINDOW_MS.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn kill(child: &mut Child) {
    // `Child::kill` sends SIGKILL on Unix: no destructor, no rollback, no goodbye.
    child.kill().unwrap();
    child.wait().unwrap();
}

// ---- the parent ----

/// Every readable event, in each stream's version order (the folds below need that
/// order; the global log's order across streams does not matter to them).
async fn all_events<S: EventLog>(store: &S) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    let mut after = S::Cursor::default();
    loop {
        let batch = store
            .read_log(&after, 5000, &EventFilter::all())
            .await
            .unwrap();
        if batch.events.is_empty() && batch.end == after {
            break;
        }
        after = batch.end;
        events.extend(batch.events);
    }
    events.sort_by(|a, b| {
        (&a.meta.stream_type, &a.meta.stream_id, a.meta.version).cmp(&(
            &b.meta.stream_type,
            &b.meta.stream_id,
            b.meta.version,
        ))
    });
    events
}

fn is_terminal(event_type: &str) -> bool {
    matches!(event_type, "OrderRejected" | "OrderPaid" | "OrderCancelled")
}

/// One run: `orders` orders, `kills` kills; `notifications` counts the read model's rows
/// and their distinct event ids.
async fn crash_run<S, F, Fut>(store: S, target: &str, notifications: F)
where
    S: EventStore + EventLog + ProcessStore + annals::store::CheckpointStore,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (usize, usize)>,
{
    let orders = env_usize("ANNALS_CRASH_ORDERS", 200);
    let kills = env_usize("ANNALS_CRASH_KILLS", 3);
    let mut rng = Rng::new();
    let stock = u32::try_from(orders).unwrap();
    Repository::<Inventory, _>::new(store.clone())
        .execute(AddStock {
            sku: "widget".into(),
            quantity: stock,
        })
        .await
        .unwrap();

    // Kill moments spread over the placing of the orders.
    let mut kill_at: Vec<usize> = (0..kills)
        .map(|_| usize::try_from(rng.below(orders as u64)).unwrap())
        .collect();
    kill_at.sort_unstable();

    let order_repo = Repository::<Order, _>::new(store.clone());
    let mut child = spawn_child(target);
    let mut correlations = HashMap::new();
    let mut quantities = HashMap::new();
    let mut deadlines_across_restarts = HashSet::new();
    let mut next_kill = 0;
    for i in 0..orders {
        let order = format!("o{i:05}");
        let quantity = u32::try_from(1 + rng.below(3)).unwrap();
        let correlation = Uuid::new_v4();
        order_repo
            .execute_with(
                PlaceOrder {
                    order: order.clone(),
                    sku: "widget".into(),
                    quantity,
                },
                CommitMeta::new()
                    .command_id(correlation)
                    .correlation_id(correlation),
            )
            .await
            .unwrap();
        correlations.insert(order.clone(), correlation);
        quantities.insert(order, quantity);
        // Pay an earlier order now and then (refused unless it is confirmed and still
        // waiting: a payment races the deadline).
        if i >= 3 && rng.below(2) == 0 {
            let earlier = format!("o{:05}", i - 1 - usize::try_from(rng.below(3)).unwrap());
            let meta = CommitMeta::new().correlation_id(correlations[&earlier]);
            let _ = order_repo
                .execute_with(PayOrder { order: earlier }, meta)
                .await;
        }
        while next_kill < kill_at.len() && kill_at[next_kill] == i {
            tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
            for d in store.deadlines("order_payment").await.unwrap() {
                deadlines_across_restarts.insert(d.key);
            }
            kill(&mut child);
            child = spawn_child(target);
            next_kill += 1;
        }
    }

    // A deadline scheduled before a restart fires after it: wait until some are pending,
    // kill, let them come due while no child runs, restart.
    let started = Instant::now();
    loop {
        let pending = store.deadlines("order_payment").await.unwrap();
        if !pending.is_empty() {
            deadlines_across_restarts.extend(pending.into_iter().map(|d| d.key));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no deadline was ever pending"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill(&mut child);
    tokio::time::sleep(Duration::from_millis(PAY_WINDOW_MS * 2)).await;
    child = spawn_child(target);

    // Wait until every order has ended and every cancellation released its stock.
    let started = Instant::now();
    let events = loop {
        let events = all_events(&store).await;
        let ended = events
            .iter()
            .filter(|e| is_terminal(&e.meta.event_type))
            .count();
        let cancelled = events
            .iter()
            .filter(|e| e.meta.event_type == "OrderCancelled")
            .count();
        let released = events
            .iter()
            .filter(|e| e.meta.event_type == "StockReleased")
            .count();
        let pending = store.deadlines("order_payment").await.unwrap().len();
        let last = events.iter().map(|e| e.meta.position).max().unwrap_or(0);
        let mut behind = 0;
        for runner in RUNNERS {
            if !store.checkpoint_reached(runner, last).await.unwrap() {
                behind += 1;
            }
        }
        if ended >= orders && released >= cancelled && pending == 0 && behind == 0 {
            // Give the notifications a moment to catch up, then check.
            let (rows, _) = notifications().await;
            let shortages = events
                .iter()
                .filter(|e| e.meta.event_type == "OutOfStock")
                .count();
            if rows >= shortages {
                break events;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "not settled after 300 s: {ended} of {orders} orders ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    kill(&mut child);

    check(&store, &events, &correlations, &quantities, orders).await;
    let shortages: HashSet<Uuid> = events
        .iter()
        .filter(|e| e.meta.event_type == "OutOfStock")
        .map(|e| e.meta.event_id)
        .collect();
    let (rows, distinct) = notifications().await;
    assert_eq!(rows, shortages.len(), "one notification per OutOfStock");
    assert_eq!(distinct, rows, "no notification duplicated");

    // Every deadline seen pending across a restart ended its order once.
    assert!(!deadlines_across_restarts.is_empty());
    for order in &deadlines_across_restarts {
        let ends = events
            .iter()
            .filter(|e| e.meta.stream_id == *order && is_terminal(&e.meta.event_type))
            .count();
        assert_eq!(ends, 1, "order {order} had a deadline across a restart");
    }
    assert!(store.deadlines("order_payment").await.unwrap().is_empty());
}

async fn check<S>(
    store: &S,
    events: &[RecordedEvent],
    correlations: &HashMap<String, Uuid>,
    quantities: &HashMap<String, u32>,
    orders: usize,
) where
    S: ProcessStore,
{
    let by_id: HashMap<Uuid, &RecordedEvent> =
        events.iter().map(|e| (e.meta.event_id, e)).collect();
    let mut flows: HashMap<String, Vec<&RecordedEvent>> = HashMap::new();
    let mut available: i64 = 0;
    let mut reserved: i64 = 0;
    for event in events {
        let meta = &event.meta;
        match meta.stream_type.as_str() {
            "Order" => flows.entry(meta.stream_id.clone()).or_default().push(event),
            "Inventory" => {
                let value: serde_json::Value = serde_json::from_str(&event.payload).unwrap();
                let quantity = value["quantity"].as_i64().unwrap_or(0);
                match meta.event_type.as_str() {
                    "StockAdded" => available += quantity,
                    "StockReserved" => {
                        available -= quantity;
                        reserved += quantity;
                    }
                    "StockReleased" => {
                        available += quantity;
                        reserved -= quantity;
                    }
                    _ => {}
                }
                assert!(available >= 0, "stock negative at version {}", meta.version);
                assert!(
                    reserved >= 0,
                    "reserved negative at version {}",
                    meta.version
                );
                if let Some(order) = value["order"].as_str() {
                    flows.entry(order.to_owned()).or_default().push(event);
                }
            }
            other => panic!("unexpected stream type {other}"),
        }
    }
    assert_eq!(flows.len(), orders);
    let mut paid_units: i64 = 0;
    for (order, flow) in &flows {
        let kinds: Vec<&str> = flow.iter().map(|e| e.meta.event_type.as_str()).collect();
        let order_kinds: Vec<&str> = flow
            .iter()
            .filter(|e| e.meta.stream_type == "Order")
            .map(|e| e.meta.event_type.as_str())
            .collect();
        match order_kinds.as_slice() {
            ["OrderPlaced", "OrderRejected"] => {
                assert_eq!(count(&kinds, "OutOfStock"), 1, "{order}: {kinds:?}");
                assert_eq!(count(&kinds, "StockReserved"), 0, "{order}: {kinds:?}");
            }
            ["OrderPlaced", "OrderConfirmed", "OrderPaid"] => {
                assert_eq!(count(&kinds, "StockReserved"), 1, "{order}: {kinds:?}");
                assert_eq!(count(&kinds, "StockReleased"), 0, "{order}: {kinds:?}");
                paid_units += i64::from(quantities[order]);
            }
            ["OrderPlaced", "OrderConfirmed", "OrderCancelled"] => {
                assert_eq!(count(&kinds, "StockReserved"), 1, "{order}: {kinds:?}");
                assert_eq!(count(&kinds, "StockReleased"), 1, "{order}: {kinds:?}");
            }
            other => panic!("order {order}: unexpected flow {other:?} ({kinds:?})"),
        }
        assert_eq!(
            count(&kinds, "OutOfStock") + count(&kinds, "StockReserved"),
            1
        );
        // One correlation id through the whole flow; causation ids chain.
        let correlation = correlations[order];
        for event in flow {
            assert_eq!(
                event.meta.correlation_id,
                Some(correlation),
                "{order}: {} has another correlation id",
                event.meta.event_type
            );
        }
        let cause_of = |kind: &str| {
            let event = flow.iter().find(|e| e.meta.event_type == kind)?;
            let cause = event.meta.causation_id?;
            Some(
                by_id
                    .get(&cause)
                    .map_or("?", |c| c.meta.event_type.as_str()),
            )
        };
        let expected = [
            ("StockReserved", "OrderPlaced"),
            ("OutOfStock", "OrderPlaced"),
            ("OrderConfirmed", "StockReserved"),
            ("OrderRejected", "OutOfStock"),
            ("OrderCancelled", "OrderConfirmed"),
            ("StockReleased", "OrderCancelled"),
        ];
        for (kind, cause) in expected {
            if kinds.contains(&kind) {
                assert_eq!(cause_of(kind), Some(cause), "{order}: cause of {kind}");
            }
        }
    }
    assert_eq!(reserved, paid_units, "reserved units = paid orders' units");
    // Every process ended; its state says so.
    for order in flows.keys() {
        let dispatcher = annals::workflow::Dispatcher::new()
            .route(Repository::<Order, _>::new(store.clone()))
            .route(Repository::<Inventory, _>::new(store.clone()));
        let processes = Processes::<OrderPayment, S>::new(store.clone(), dispatcher).unwrap();
        if let Some((_, ended)) = processes.state(order).await.unwrap() {
            assert!(ended, "{order}: process not ended");
        }
    }
}

fn count(kinds: &[&str], kind: &str) -> usize {
    kinds.iter().filter(|k| **k == kind).count()
}

async fn sqlite_notifications(path: &Path) -> (usize, usize) {
    let store = SqliteStore::open(path).await.unwrap();
    let rows: (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM shop_notifications")
            .fetch_one(store.pool())
            .await
            .unwrap();
    store.pool().close().await;
    (
        usize::try_from(rows.0).unwrap(),
        usize::try_from(rows.1).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_proof() {
    for run in 0..env_usize("ANNALS_CRASH_RUNS", 1) {
        eprintln!("sqlite crash run {run}");
        let dir = annals_tests::TempDir::new().unwrap();
        let path = dir.path().join("crash.db");
        let store = SqliteStore::open(&path).await.unwrap();
        shop::create_notifications(&store).await.unwrap();
        let target = format!("sqlite:{}", path.display());
        crash_run(store.clone(), &target, || sqlite_notifications(&path)).await;
    }
}

#[cfg(feature = "postgres")]
mod pg {
    use annals::{projection, EventMeta, PgStore, PgTx};

    use super::OutOfStock;

    pub async fn open(schema: &str) -> PgStore {
        let url = annals_tests::database_url();
        PgStore::options()
            .schema(schema)
            .max_connections(8)
            .open(&url)
            .await
            .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {url}: {e}"))
    }

    /// Customer service's inbox in the store's schema, one row per `OutOfStock` event.
    pub struct PgNotes {
        table: String,
    }

    impl PgNotes {
        pub fn new(schema: &str) -> Self {
            PgNotes {
                table: format!("\"{schema}\".notifications"),
            }
        }
    }

    #[projection(name = "shop_notifications")]
    impl PgNotes {
        #[on]
        async fn out_of_stock(
            &mut self,
            e: &OutOfStock,
            m: &EventMeta,
            tx: &mut PgTx,
        ) -> Result<(), sqlx::Error> {
            let sql = format!(
                "INSERT INTO {} (event_id, order_id) VALUES ($1, $2)",
                self.table
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(m.event_id)
                .bind(&e.order)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_crash_proof() {
    for run in 0..env_usize("ANNALS_CRASH_RUNS", 1) {
        eprintln!("postgres crash run {run}");
        let schema = format!("crash_{}", Uuid::new_v4().simple());
        let store = pg::open(&schema).await;
        let table = format!("\"{schema}\".notifications");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (event_id uuid PRIMARY KEY, order_id text NOT NULL)"
        )))
        .execute(store.pool())
        .await
        .unwrap();
        let target = format!("postgres:{schema}");
        let pool = store.pool().clone();
        let count_table = table.clone();
        let count = move || {
            let pool = pool.clone();
            let table = count_table.clone();
            async move {
                let rows: (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*), count(DISTINCT event_id) FROM {table}"
                )))
                .fetch_one(&pool)
                .await
                .unwrap();
                (
                    usize::try_from(rows.0).unwrap(),
                    usize::try_from(rows.1).unwrap(),
                )
            }
        };
        let outcome = tokio::spawn({
            let store = store.clone();
            async move { crash_run(store, &target, count).await }
        })
        .await;
        store.pool().close().await;
        annals_tests::drop_schema(&annals_tests::database_url(), &schema)
            .await
            .unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic.into_panic());
        }
    }
}
