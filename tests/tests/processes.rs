//! Process managers on every store: state per correlation key saved with the checkpoint,
//! an end state, and a deadline that fires after a restart, once, with the flow's
//! correlation id and the scheduling event as causation.

use std::time::Duration;

use annals::store::{CheckpointStore, EventLog, EventStore, ProcessStore, StreamRange};
use annals::workflow::{command_id, Ctx, Dispatcher, Processes};
use annals::{
    aggregate, process, Command, CommitMeta, Event, EventMeta, Events, MemoryStore, Repository,
    Runner, SqliteStore, StreamRef, Uuid,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct OrderPlaced {
    amount: u32,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct OrderPaid {}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct OrderCancelled {
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Events)]
#[allow(clippy::enum_variant_names)]
enum OrderEvent {
    OrderPlaced(OrderPlaced),
    OrderPaid(OrderPaid),
    OrderCancelled(OrderCancelled),
}

#[derive(Debug, thiserror::Error)]
#[error("order is closed")]
struct Closed;

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
struct PlaceOrder {
    #[command(id)]
    order: String,
    amount: u32,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
struct PayOrder {
    #[command(id)]
    order: String,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
struct CancelOrder {
    #[command(id)]
    order: String,
}

#[derive(Debug, Default)]
struct Order {
    closed: bool,
}

#[aggregate(id = String, event = OrderEvent, error = Closed)]
impl Order {
    #[command(create)]
    fn place(&self, cmd: PlaceOrder) -> Result<OrderPlaced, Closed> {
        Ok(OrderPlaced { amount: cmd.amount })
    }

    #[command]
    fn pay(&self, _: PayOrder) -> Result<OrderPaid, Closed> {
        if self.closed {
            return Err(Closed);
        }
        Ok(OrderPaid {})
    }

    #[command]
    fn cancel(&self, _: CancelOrder) -> Result<OrderCancelled, Closed> {
        if self.closed {
            return Err(Closed);
        }
        Ok(OrderCancelled {
            reason: "not paid in time".into(),
        })
    }

    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {}

    #[apply]
    fn paid(&mut self, _: &OrderPaid) {
        self.closed = true;
    }

    #[apply]
    fn cancelled(&mut self, _: &OrderCancelled) {
        self.closed = true;
    }
}

const PAY_WINDOW: Duration = Duration::from_millis(400);

/// Cancels an order not paid within `PAY_WINDOW`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct OrderPayment {
    order: String,
    amount: u32,
    reminders: u32,
}

#[process(name = "order_payment", key = stream_id)]
impl OrderPayment {
    #[on]
    fn placed(&mut self, e: &OrderPlaced, meta: &EventMeta, ctx: &mut Ctx) {
        self.order = meta.stream_id.clone();
        self.amount = e.amount;
        ctx.schedule_in("payment_due", PAY_WINDOW);
    }

    #[on]
    async fn paid(&mut self, _: &OrderPaid, ctx: &mut Ctx) {
        ctx.cancel("payment_due");
        ctx.complete();
    }

    #[on]
    fn cancelled(&mut self, _: &OrderCancelled, ctx: &mut Ctx) {
        ctx.complete();
    }

    #[deadline]
    fn payment_due(&mut self) -> CancelOrder {
        self.reminders += 1;
        CancelOrder {
            order: self.order.clone(),
        }
    }
}

fn processes<S: ProcessStore>(store: &S) -> Processes<OrderPayment, S> {
    let dispatcher = Dispatcher::new().route(Repository::<Order, _>::new(store.clone()));
    Processes::new(store.clone(), dispatcher).unwrap()
}

async fn types<S: EventStore>(store: &S, order: &str) -> Vec<annals::RecordedEvent> {
    store
        .read_stream(StreamRef::new("Order", order), StreamRange::from(1))
        .await
        .unwrap()
}

async fn payment_deadline<S>(store: S)
where
    S: EventStore + EventLog + CheckpointStore + ProcessStore,
{
    let orders = Repository::<Order, _>::new(store.clone());
    let correlation = Uuid::new_v4();
    for order in ["paid", "late"] {
        orders
            .execute_with(
                PlaceOrder {
                    order: order.into(),
                    amount: 3,
                },
                CommitMeta::new().correlation_id(correlation),
            )
            .await
            .unwrap();
    }
    orders
        .execute(PayOrder {
            order: "paid".into(),
        })
        .await
        .unwrap();

    let mut runner = Runner::new(store.clone(), processes(&store)).batch_size(2);
    runner.catch_up().await.unwrap();
    let (paid, ended) = runner.projection().state("paid").await.unwrap().unwrap();
    assert!(ended);
    assert_eq!((paid.order.as_str(), paid.amount), ("paid", 3));
    let (_, ended) = runner.projection().state("late").await.unwrap().unwrap();
    assert!(!ended);
    let pending = runner.projection().deadlines().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].key, "late");
    assert_eq!(pending[0].name, "payment_due");
    let placed = &types(&store, "late").await[0];
    assert_eq!(pending[0].due_at, placed.meta.recorded_at + PAY_WINDOW);
    assert_eq!(pending[0].causation_id, Some(placed.meta.event_id));
    assert_eq!(pending[0].correlation_id, Some(correlation));

    // A restart: a new runner, after the deadline passed.
    drop(runner);
    tokio::time::sleep(PAY_WINDOW + Duration::from_millis(100)).await;
    let mut runner = Runner::new(store.clone(), processes(&store));
    runner.catch_up().await.unwrap();
    let late = types(&store, "late").await;
    let kinds: Vec<_> = late.iter().map(|e| e.meta.event_type.as_str()).collect();
    assert_eq!(kinds, ["OrderPlaced", "OrderCancelled"]);
    let cancelled = &late[1].meta;
    assert_eq!(cancelled.correlation_id, Some(correlation));
    assert_eq!(cancelled.causation_id, Some(placed.meta.event_id));
    assert_eq!(
        cancelled.command_id,
        Some(command_id("order_payment", pending[0].id, "0"))
    );
    assert!(runner.projection().deadlines().await.unwrap().is_empty());
    // The cancellation ended the process; the deadline handler ran once.
    let (late_state, ended) = runner.projection().state("late").await.unwrap().unwrap();
    assert!(ended);
    assert_eq!(late_state.reminders, 1);

    // Once: more turns fire nothing more.
    let head = store.head().await.unwrap();
    runner.catch_up().await.unwrap();
    let mut again = Runner::new(store.clone(), processes(&store));
    again.catch_up().await.unwrap();
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(types(&store, "paid").await.len(), 2);
}

#[tokio::test]
async fn memory_payment_deadline() {
    payment_deadline(MemoryStore::new()).await;
}

#[tokio::test]
async fn sqlite_payment_deadline() {
    let dir = annals_tests::TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path().join("processes.db"))
        .await
        .unwrap();
    payment_deadline(store).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn pg_payment_deadline() {
    let schema = format!("procs_{}", Uuid::new_v4().simple());
    let url = annals_tests::database_url();
    let store = annals::PgStore::options()
        .schema(schema.as_str())
        .open(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {url}: {e}"));
    let outcome = tokio::spawn(payment_deadline(store.clone())).await;
    store.pool().close().await;
    annals_tests::drop_schema(&url, &schema).await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
