//! Process managers on every store: state per correlation key saved with the checkpoint,
//! an end state, and a deadline that fires after a restart, once, with the flow's
//! correlation id and the scheduling event as causation; handlers deciding their commands
//! from services; refused commands stopping the runner, recorded as ignored, or compensated
//! by a `#[rejected]` handler (for an event's commands and for a deadline's).

use std::time::Duration;

use annals::store::{CheckpointStore, EventLog, EventStore, ProcessStore, Resolution, StreamRange};
use annals::workflow::{command_id, Ctx, Dispatcher, Processes, Rejection};
use annals::{
    aggregate, process, Command, CommitMeta, Event, EventMeta, Events, MemoryStore,
    ProjectionError, Repository, Runner, SqliteStore, StreamRef, Uuid,
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

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct OrderCharged {
    amount: u32,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct OrderRefunded {}

#[derive(Debug, Clone, PartialEq, Events)]
#[allow(clippy::enum_variant_names)]
enum OrderEvent {
    OrderPlaced(OrderPlaced),
    OrderPaid(OrderPaid),
    OrderCancelled(OrderCancelled),
    OrderCharged(OrderCharged),
    OrderRefunded(OrderRefunded),
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

/// Charges an order (accepted open or closed).
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
struct ChargeOrder {
    #[command(id)]
    order: String,
    amount: u32,
}

/// Refunds an order (accepted open or closed): what the compensations send.
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
struct RefundOrder {
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

    #[command]
    fn charge(&self, cmd: ChargeOrder) -> Result<OrderCharged, Closed> {
        Ok(OrderCharged { amount: cmd.amount })
    }

    #[command]
    fn refund(&self, _: RefundOrder) -> Result<OrderRefunded, Closed> {
        Ok(OrderRefunded {})
    }

    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {}

    #[apply]
    fn charged(&mut self, _: &OrderCharged) {}

    #[apply]
    fn refunded(&mut self, _: &OrderRefunded) {}

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

// ---- services ----

/// What the billing process charges: a service handed to its handlers, not part of its
/// stored state.
#[derive(Debug)]
struct Prices {
    unit: u32,
    late_fee: u32,
}

/// Charges each order from the price list, and a late fee when it is not paid by its
/// deadline.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Billing {
    order: String,
    charged: u32,
}

#[process(name = "billing", key = stream_id)]
impl Billing {
    #[on]
    fn placed(
        &mut self,
        e: &OrderPlaced,
        meta: &EventMeta,
        prices: &Prices,
        ctx: &mut Ctx,
    ) -> ChargeOrder {
        self.order = meta.stream_id.clone();
        self.charged = e.amount * prices.unit;
        ctx.schedule_in("late_fee", Duration::ZERO);
        ChargeOrder {
            order: self.order.clone(),
            amount: self.charged,
        }
    }

    #[on]
    fn paid(&mut self, _: &OrderPaid, ctx: &mut Ctx) {
        ctx.complete();
    }

    #[deadline]
    async fn late_fee(&mut self, prices: &Prices, ctx: &mut Ctx) -> ChargeOrder {
        self.charged += prices.late_fee;
        ctx.complete();
        ChargeOrder {
            order: self.order.clone(),
            amount: prices.late_fee,
        }
    }
}

fn billing<S: ProcessStore>(store: &S, prices: Prices) -> Processes<Billing, S> {
    let dispatcher = Dispatcher::new().route(Repository::<Order, _>::new(store.clone()));
    Processes::with_services(store.clone(), prices, dispatcher).unwrap()
}

fn charges(events: &[annals::RecordedEvent]) -> Vec<u32> {
    events
        .iter()
        .filter(|e| e.meta.event_type == "OrderCharged")
        .map(|e| {
            serde_json::from_str::<OrderCharged>(&e.payload)
                .unwrap()
                .amount
        })
        .collect()
}

async fn services_decide<S>(store: S)
where
    S: EventStore + EventLog + CheckpointStore + ProcessStore,
{
    let orders = Repository::<Order, _>::new(store.clone());
    for (order, amount) in [("paid", 3), ("unpaid", 2)] {
        orders
            .execute(PlaceOrder {
                order: order.into(),
                amount,
            })
            .await
            .unwrap();
    }
    orders
        .execute(PayOrder {
            order: "paid".into(),
        })
        .await
        .unwrap();

    let prices = Prices {
        unit: 7,
        late_fee: 5,
    };
    let mut runner = Runner::new(store.clone(), billing(&store, prices));
    assert_eq!(runner.projection().services().unit, 7);
    runner.catch_up().await.unwrap();

    // The paid order: charged from the price list; paying ended the process and cancelled
    // its late fee.
    let paid = types(&store, "paid").await;
    assert_eq!(charges(&paid), [21]);
    let charged = paid.last().unwrap();
    assert_eq!(
        charged.meta.command_id,
        Some(command_id("billing", paid[0].meta.event_id, "0"))
    );
    // The unpaid one: charged, then the late fee from its deadline, which ended it.
    let unpaid = types(&store, "unpaid").await;
    assert_eq!(charges(&unpaid), [14, 5]);
    let (state, ended) = runner.projection().state("unpaid").await.unwrap().unwrap();
    assert!(ended);
    assert_eq!(state.charged, 19);
    assert!(runner.projection().deadlines().await.unwrap().is_empty());

    // Services are not state: a runner with other prices finds nothing more to do.
    let head = store.head().await.unwrap();
    let other = Prices {
        unit: 100,
        late_fee: 100,
    };
    let mut again = Runner::new(store.clone(), billing(&store, other));
    again.catch_up().await.unwrap();
    assert_eq!(store.head().await.unwrap(), head);
}

// ---- refused commands ----

/// Pays every order placed, and retries once by a deadline; refusals are compensated by a
/// refund.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AutoPay {
    order: String,
    refusals: Vec<String>,
}

#[process(name = "auto_pay", key = stream_id)]
impl AutoPay {
    #[on]
    fn placed(&mut self, _: &OrderPlaced, meta: &EventMeta, ctx: &mut Ctx) -> PayOrder {
        self.order = meta.stream_id.clone();
        ctx.schedule_in("retry", Duration::ZERO);
        PayOrder {
            order: self.order.clone(),
        }
    }

    #[deadline]
    fn retry(&mut self) -> PayOrder {
        PayOrder {
            order: self.order.clone(),
        }
    }

    #[rejected]
    async fn refused(&mut self, rejection: &Rejection, ctx: &mut Ctx) -> RefundOrder {
        assert!(rejection.command.ends_with("PayOrder"));
        assert!(rejection.error.to_string().contains("PayOrder"));
        self.refusals.push(match &rejection.deadline {
            Some(name) => format!("deadline {name} #{}", rejection.index),
            None => format!("event #{}", rejection.index),
        });
        if rejection.deadline.is_some() {
            ctx.complete();
        }
        RefundOrder {
            order: self.order.clone(),
        }
    }
}

/// The same without a `#[rejected]` handler: refusals are recorded and skipped.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AutoPayIgnoring {
    order: String,
    retried: bool,
}

#[process(name = "auto_pay_ignoring", key = stream_id, rejected = ignore)]
impl AutoPayIgnoring {
    #[on]
    fn placed(&mut self, _: &OrderPlaced, meta: &EventMeta, ctx: &mut Ctx) -> PayOrder {
        self.order = meta.stream_id.clone();
        ctx.schedule_in("retry", Duration::ZERO);
        PayOrder {
            order: self.order.clone(),
        }
    }

    #[deadline]
    fn retry(&mut self, ctx: &mut Ctx) -> PayOrder {
        self.retried = true;
        ctx.complete();
        PayOrder {
            order: self.order.clone(),
        }
    }
}

/// The same with the default policy: a refusal fails the event.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AutoPayStrict {
    order: String,
}

#[process(name = "auto_pay_strict", key = stream_id, rejected = stop)]
impl AutoPayStrict {
    #[on]
    fn placed(&mut self, _: &OrderPlaced, meta: &EventMeta) -> PayOrder {
        self.order = meta.stream_id.clone();
        PayOrder {
            order: self.order.clone(),
        }
    }
}

fn order_processes<P, S>(store: &S) -> Processes<P, S>
where
    S: ProcessStore,
    P: annals::workflow::Process<S, Services = ()>,
{
    let dispatcher = Dispatcher::new().route(Repository::<Order, _>::new(store.clone()));
    Processes::new(store.clone(), dispatcher).unwrap()
}

fn kinds(events: &[annals::RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.meta.event_type.as_str()).collect()
}

/// Places `open` and `closed`, and cancels `closed` before any process sees it.
async fn place_and_close<S: EventStore>(store: &S) -> Uuid {
    let orders = Repository::<Order, _>::new(store.clone());
    let correlation = Uuid::new_v4();
    for order in ["open", "closed"] {
        orders
            .execute_with(
                PlaceOrder {
                    order: order.into(),
                    amount: 1,
                },
                CommitMeta::new().correlation_id(correlation),
            )
            .await
            .unwrap();
    }
    orders
        .execute(CancelOrder {
            order: "closed".into(),
        })
        .await
        .unwrap();
    correlation
}

async fn refusals_compensated<S>(store: S)
where
    S: EventStore + EventLog + CheckpointStore + ProcessStore,
{
    let correlation = place_and_close(&store).await;
    let mut runner = Runner::new(store.clone(), order_processes::<AutoPay, _>(&store));
    runner.catch_up().await.unwrap();
    let pending = runner.projection().deadlines().await.unwrap();
    assert!(pending.is_empty(), "every retry fired: {pending:?}");

    // `closed`: the event's payment refused and refunded, then the deadline's too.
    let closed = types(&store, "closed").await;
    assert_eq!(
        kinds(&closed),
        [
            "OrderPlaced",
            "OrderCancelled",
            "OrderRefunded",
            "OrderRefunded"
        ]
    );
    let placed = &closed[0].meta;
    let deadline = command_id("auto_pay", placed.event_id, "deadline/closed/retry");
    assert_eq!(
        closed[2].meta.command_id,
        Some(command_id("auto_pay", placed.event_id, "0/rejected/0"))
    );
    assert_eq!(
        closed[3].meta.command_id,
        Some(command_id("auto_pay", deadline, "0/rejected/0"))
    );
    for refund in &closed[2..] {
        assert_eq!(refund.meta.correlation_id, Some(correlation));
        assert_eq!(refund.meta.causation_id, Some(placed.event_id));
    }
    let (state, ended) = runner.projection().state("closed").await.unwrap().unwrap();
    assert_eq!(state.refusals, ["event #0", "deadline retry #0"]);
    assert!(ended, "the compensation of the deadline ended it");

    // `open`: paid by the event; the deadline's second payment refused and refunded.
    let open = types(&store, "open").await;
    assert_eq!(kinds(&open), ["OrderPlaced", "OrderPaid", "OrderRefunded"]);
    let (state, ended) = runner.projection().state("open").await.unwrap().unwrap();
    assert_eq!(state.refusals, ["deadline retry #0"]);
    assert!(ended);

    // Nothing recorded as parked or ignored; nothing sent twice by another runner.
    assert!(store.parked(None, true).await.unwrap().is_empty());
    let head = store.head().await.unwrap();
    let mut again = Runner::new(store.clone(), order_processes::<AutoPay, _>(&store));
    again.catch_up().await.unwrap();
    assert_eq!(store.head().await.unwrap(), head);
}

async fn refusals_ignored<S>(store: S)
where
    S: EventStore + EventLog + CheckpointStore + ProcessStore,
{
    place_and_close(&store).await;
    let mut runner = Runner::new(store.clone(), order_processes::<AutoPayIgnoring, _>(&store));
    runner.catch_up().await.unwrap();

    let closed = types(&store, "closed").await;
    assert_eq!(kinds(&closed), ["OrderPlaced", "OrderCancelled"]);
    let (state, ended) = runner.projection().state("closed").await.unwrap().unwrap();
    assert!(state.retried && ended, "{state:?}");
    let open = types(&store, "open").await;
    assert_eq!(kinds(&open), ["OrderPlaced", "OrderPaid"]);

    // Recorded, never parked: the event's refusal under the event, each deadline's under
    // a record of the deadline.
    assert!(store
        .parked(Some("auto_pay_ignoring"), false)
        .await
        .unwrap()
        .is_empty());
    let recorded = store.parked(Some("auto_pay_ignoring"), true).await.unwrap();
    let mut seen: Vec<_> = recorded
        .iter()
        .map(|p| {
            assert_eq!(p.resolution, Some(Resolution::Ignored));
            assert!(p.error.contains("order is closed"), "{}", p.error);
            (
                p.event.meta.event_type.as_str(),
                p.event.meta.stream_id.as_str(),
            )
        })
        .collect();
    // The deadlines fire earliest first, both after the events.
    seen[1..].sort_unstable();
    assert_eq!(
        seen,
        [
            ("OrderPlaced", "closed"),
            ("deadline retry", "closed"),
            ("deadline retry", "open"),
        ]
    );
    let placed = &closed[0].meta;
    assert_eq!(recorded[0].event.meta.event_id, placed.event_id);
    let deadline = &recorded
        .iter()
        .find(|p| p.event.meta.stream_id == "closed" && p.event.meta.position == 0)
        .unwrap()
        .event
        .meta;
    assert_eq!(
        deadline.event_id,
        command_id(
            "auto_pay_ignoring",
            placed.event_id,
            "deadline/closed/retry"
        )
    );
    assert_eq!(deadline.position, 0);
    assert_eq!(deadline.causation_id, Some(placed.event_id));
}

async fn refusals_stop<S>(store: S)
where
    S: EventStore + EventLog + CheckpointStore + ProcessStore,
{
    place_and_close(&store).await;
    let mut runner = Runner::new(store.clone(), order_processes::<AutoPayStrict, _>(&store));
    let error = runner.catch_up().await.unwrap_err();
    assert!(
        matches!(
            &error,
            ProjectionError::Command {
                transient: false,
                ..
            }
        ),
        "{error:?}"
    );
    // The batch rolled back: no state saved, the checkpoint where it was. `open`'s payment
    // was sent before the batch's transaction; sent again when the batch is delivered
    // again, it takes effect once.
    assert!(runner.projection().state("open").await.unwrap().is_none());
    assert!(runner.projection().state("closed").await.unwrap().is_none());
    assert_eq!(store.checkpoint("auto_pay_strict").await.unwrap(), 0);
    runner.catch_up().await.unwrap_err();
    let open = types(&store, "open").await;
    assert_eq!(kinds(&open), ["OrderPlaced", "OrderPaid"]);
    assert_eq!(store.checkpoint("auto_pay_strict").await.unwrap(), 0);
}

macro_rules! on_every_store {
    ($scenario:ident: $memory:ident, $sqlite:ident, $pg:ident) => {
        #[tokio::test]
        async fn $memory() {
            $scenario(MemoryStore::new()).await;
        }

        #[tokio::test]
        async fn $sqlite() {
            let dir = annals_tests::TempDir::new().unwrap();
            let store = SqliteStore::open(dir.path().join("processes.db"))
                .await
                .unwrap();
            $scenario(store).await;
        }

        #[cfg(feature = "postgres")]
        #[tokio::test]
        async fn $pg() {
            let schema = format!("procs_{}", Uuid::new_v4().simple());
            let url = annals_tests::database_url();
            let store = annals::PgStore::options()
                .schema(schema.as_str())
                .open(&url)
                .await
                .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {url}: {e}"));
            let outcome = tokio::spawn($scenario(store.clone())).await;
            store.pool().close().await;
            annals_tests::drop_schema(&url, &schema).await.unwrap();
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic.into_panic());
            }
        }
    };
}

on_every_store!(services_decide: memory_services_decide, sqlite_services_decide, pg_services_decide);
on_every_store!(
    refusals_compensated: memory_refusals_compensated,
    sqlite_refusals_compensated,
    pg_refusals_compensated
);
on_every_store!(
    refusals_ignored: memory_refusals_ignored,
    sqlite_refusals_ignored,
    pg_refusals_ignored
);
on_every_store!(refusals_stop: memory_refusals_stop, sqlite_refusals_stop, pg_refusals_stop);
