//! Reactors on every store: events turn into commands through the dispatcher, each command
//! once under a derived id, with the correlation id carried over and the triggering event as
//! causation; a redelivered batch sends nothing twice; unrouted commands fail when the
//! reactor is set up; refused commands stop, are recorded, or are compensated.

use annals::store::{CheckpointStore, EventLog, EventStore, ParkingStore, Resolution};
use annals::workflow::{command_id, Dispatcher, Reactions, Rejection};
use annals::{
    aggregate, reactor, Command, CommitMeta, Event, EventMeta, Events, MemoryStore,
    ProjectionError, Repository, Runner, SqliteStore, Uuid,
};
use serde::{Deserialize, Serialize};

// ---- the domain: an inventory and orders ----

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct StockAdded {
    quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct StockReserved {
    order: String,
    quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct OutOfStock {
    order: String,
}

#[derive(Debug, Clone, PartialEq, Events)]
enum InventoryEvent {
    StockAdded(StockAdded),
    StockReserved(StockReserved),
    OutOfStock(OutOfStock),
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum ShopError {
    #[error("order is already decided")]
    AlreadyDecided,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Inventory)]
struct AddStock {
    #[command(id)]
    sku: String,
    quantity: u32,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Inventory)]
struct ReserveStock {
    #[command(id)]
    sku: String,
    order: String,
    quantity: u32,
}

#[derive(Debug, Default)]
struct Inventory {
    available: u32,
}

#[aggregate(id = String, event = InventoryEvent, error = ShopError)]
impl Inventory {
    #[command(any)]
    fn add(&self, cmd: AddStock) -> Result<StockAdded, ShopError> {
        Ok(StockAdded {
            quantity: cmd.quantity,
        })
    }

    #[command(any)]
    fn reserve(&self, cmd: ReserveStock) -> Result<InventoryEvent, ShopError> {
        if cmd.quantity > self.available {
            return Ok(OutOfStock { order: cmd.order }.into());
        }
        Ok(StockReserved {
            order: cmd.order,
            quantity: cmd.quantity,
        }
        .into())
    }

    #[apply]
    fn added(&mut self, e: &StockAdded) {
        self.available += e.quantity;
    }

    #[apply]
    fn reserved(&mut self, e: &StockReserved) {
        self.available -= e.quantity;
    }

    #[apply]
    fn out_of_stock(&mut self, _: &OutOfStock) {}
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct OrderPlaced {
    sku: String,
    quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct OrderConfirmed {}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct OrderRejected {
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Events)]
#[allow(clippy::enum_variant_names)]
enum OrderEvent {
    OrderPlaced(OrderPlaced),
    OrderConfirmed(OrderConfirmed),
    OrderRejected(OrderRejected),
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
struct PlaceOrder {
    #[command(id)]
    order: String,
    sku: String,
    quantity: u32,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
struct ConfirmOrder {
    #[command(id)]
    order: String,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
struct RejectOrder {
    #[command(id)]
    order: String,
    reason: String,
}

#[derive(Debug, Default)]
struct Order {
    decided: bool,
}

#[aggregate(id = String, event = OrderEvent, error = ShopError)]
impl Order {
    #[command(create)]
    fn place(&self, cmd: PlaceOrder) -> Result<OrderPlaced, ShopError> {
        Ok(OrderPlaced {
            sku: cmd.sku,
            quantity: cmd.quantity,
        })
    }

    #[command]
    fn confirm(&self, _: ConfirmOrder) -> Result<OrderConfirmed, ShopError> {
        if self.decided {
            return Err(ShopError::AlreadyDecided);
        }
        Ok(OrderConfirmed {})
    }

    #[command]
    fn reject(&self, cmd: RejectOrder) -> Result<OrderRejected, ShopError> {
        if self.decided {
            return Err(ShopError::AlreadyDecided);
        }
        Ok(OrderRejected { reason: cmd.reason })
    }

    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {}

    #[apply]
    fn confirmed(&mut self, _: &OrderConfirmed) {
        self.decided = true;
    }

    #[apply]
    fn rejected(&mut self, _: &OrderRejected) {
        self.decided = true;
    }
}

// ---- the reactors ----

/// The inventory consumes placed orders.
struct InventoryOnOrders;

#[reactor(name = "inventory_on_orders")]
impl InventoryOnOrders {
    #[on]
    fn placed(&self, e: &OrderPlaced, meta: &EventMeta) -> ReserveStock {
        ReserveStock {
            sku: e.sku.clone(),
            order: meta.stream_id.clone(),
            quantity: e.quantity,
        }
    }
}

/// Orders follow the inventory's answers.
struct OrdersOnInventory;

#[reactor(name = "orders_on_inventory")]
impl OrdersOnInventory {
    #[on]
    async fn reserved(&self, e: &StockReserved) -> ConfirmOrder {
        ConfirmOrder {
            order: e.order.clone(),
        }
    }

    #[on]
    fn out_of_stock(&self, e: &OutOfStock) -> Option<RejectOrder> {
        Some(RejectOrder {
            order: e.order.clone(),
            reason: "out of stock".into(),
        })
    }
}

/// Sends both a confirmation and a rejection for every placed order: the second is refused.
/// `rejected` picks the policy under test.
struct Contrary;

#[reactor(name = "contrary_stop")]
impl Contrary {
    #[on]
    fn placed(&self, _: &OrderPlaced, meta: &EventMeta) -> (ConfirmOrder, Vec<RejectOrder>) {
        let order = meta.stream_id.clone();
        (
            ConfirmOrder {
                order: order.clone(),
            },
            vec![RejectOrder {
                order,
                reason: "contrary".into(),
            }],
        )
    }
}

struct ContraryIgnoring;

#[reactor(name = "contrary_ignore", rejected = ignore)]
impl ContraryIgnoring {
    #[on]
    fn placed(&self, _: &OrderPlaced, meta: &EventMeta) -> Vec<OrderCommand> {
        let order = meta.stream_id.clone();
        vec![
            ConfirmOrder {
                order: order.clone(),
            }
            .into(),
            RejectOrder {
                order,
                reason: "contrary".into(),
            }
            .into(),
        ]
    }
}

/// Compensates a refused rejection by putting the stock back.
struct ContraryCompensating;

#[reactor(name = "contrary_compensate")]
impl ContraryCompensating {
    #[on]
    fn placed(
        &self,
        e: &OrderPlaced,
        meta: &EventMeta,
    ) -> Result<(ConfirmOrder, RejectOrder, AddStock), std::io::Error> {
        let order = meta.stream_id.clone();
        Ok((
            ConfirmOrder {
                order: order.clone(),
            },
            RejectOrder {
                order,
                reason: "contrary".into(),
            },
            AddStock {
                sku: e.sku.clone(),
                quantity: 0,
            },
        ))
    }

    #[rejected]
    async fn refused(&self, rejection: &Rejection, meta: &EventMeta) -> AddStock {
        AddStock {
            sku: format!("refunds-{}-{}", meta.stream_id, rejection.index),
            quantity: 1,
        }
    }
}

// ---- the cases, on any store ----

fn dispatcher<S>(store: &S) -> Dispatcher<S>
where
    S: EventStore,
{
    Dispatcher::new()
        .route(Repository::<Order, _>::new(store.clone()))
        .route(Repository::<Inventory, _>::new(store.clone()))
}

async fn place(store: &impl EventStore, order: &str, quantity: u32) -> Uuid {
    let correlation = Uuid::new_v4();
    Repository::<Order, _>::new(store.clone())
        .execute_with(
            PlaceOrder {
                order: order.into(),
                sku: "apple".into(),
                quantity,
            },
            CommitMeta::new().correlation_id(correlation),
        )
        .await
        .unwrap();
    correlation
}

async fn stream_types<S: EventStore>(store: &S, stream_type: &str, id: &str) -> Vec<String> {
    store
        .read_stream(
            annals::StreamRef::new(stream_type, id),
            annals::store::StreamRange::from(1),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.meta.event_type)
        .collect()
}

async fn choreography<S>(store: S)
where
    S: EventStore + EventLog + CheckpointStore + ParkingStore,
{
    Repository::<Inventory, _>::new(store.clone())
        .execute(AddStock {
            sku: "apple".into(),
            quantity: 5,
        })
        .await
        .unwrap();
    let first = place(&store, "o1", 3).await;
    let second = place(&store, "o2", 3).await;

    let reactions = Reactions::new(store.clone(), InventoryOnOrders, dispatcher(&store)).unwrap();
    let mut inventory = Runner::new(store.clone(), reactions).batch_size(1);
    let reactions = Reactions::new(store.clone(), OrdersOnInventory, dispatcher(&store)).unwrap();
    let mut orders = Runner::new(store.clone(), reactions);
    inventory.catch_up().await.unwrap();
    orders.catch_up().await.unwrap();

    assert_eq!(
        stream_types(&store, "Order", "o1").await,
        ["OrderPlaced", "OrderConfirmed"]
    );
    assert_eq!(
        stream_types(&store, "Order", "o2").await,
        ["OrderPlaced", "OrderRejected"]
    );
    assert_eq!(
        stream_types(&store, "Inventory", "apple").await,
        ["StockAdded", "StockReserved", "OutOfStock"]
    );

    // Correlation carried over, causation the triggering event, ids derived.
    let all = store
        .read_log(&Default::default(), 100, &annals::store::EventFilter::all())
        .await
        .unwrap()
        .events;
    let by_type = |t: &str, order: &str| {
        all.iter()
            .find(|e| {
                e.meta.event_type == t && (e.meta.stream_id == order || e.payload.contains(order))
            })
            .unwrap_or_else(|| panic!("{t} of {order}"))
            .meta
            .clone()
    };
    for (order, correlation, answer, decision) in [
        ("o1", first, "StockReserved", "OrderConfirmed"),
        ("o2", second, "OutOfStock", "OrderRejected"),
    ] {
        let placed = by_type("OrderPlaced", order);
        let answered = by_type(answer, order);
        let decided = by_type(decision, order);
        assert_eq!(placed.correlation_id, Some(correlation));
        assert_eq!(answered.correlation_id, Some(correlation));
        assert_eq!(decided.correlation_id, Some(correlation));
        assert_eq!(answered.causation_id, Some(placed.event_id));
        assert_eq!(decided.causation_id, Some(answered.event_id));
        assert_eq!(
            answered.command_id,
            Some(command_id("inventory_on_orders", placed.event_id, "0"))
        );
        assert_eq!(
            decided.command_id,
            Some(command_id("orders_on_inventory", answered.event_id, "0"))
        );
    }

    // A redelivery (the checkpoints set back, as after a crash before they committed)
    // sends every command again under the same id: nothing is appended twice.
    let head = store.head().await.unwrap();
    inventory.reset().await.unwrap();
    orders.reset().await.unwrap();
    inventory.catch_up().await.unwrap();
    orders.catch_up().await.unwrap();
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(
        stream_types(&store, "Order", "o1").await,
        ["OrderPlaced", "OrderConfirmed"]
    );
}

async fn unrouted<S>(store: S)
where
    S: EventStore + ParkingStore,
{
    let only_orders = Dispatcher::new().route(Repository::<Order, _>::new(store.clone()));
    let error = Reactions::new(store.clone(), InventoryOnOrders, only_orders).unwrap_err();
    match error {
        ProjectionError::Unrouted {
            runner,
            command,
            aggregate,
        } => {
            assert_eq!(runner, "inventory_on_orders");
            assert!(command.ends_with("ReserveStock"), "{command}");
            assert_eq!(aggregate, "Inventory");
        }
        other => panic!("expected Unrouted, got {other:?}"),
    }
    // A reactor returning commands of several aggregates needs a route for each.
    let only_orders = Dispatcher::new().route(Repository::<Order, _>::new(store.clone()));
    assert!(matches!(
        Reactions::new(store.clone(), ContraryCompensating, only_orders),
        Err(ProjectionError::Unrouted {
            aggregate: "Inventory",
            ..
        })
    ));
}

async fn refusals<S>(store: S)
where
    S: EventStore + EventLog + CheckpointStore + ParkingStore,
{
    place(&store, "r1", 1).await;

    // Stop: the event fails, the checkpoint stays before it; with parking, it is parked.
    let reactions = Reactions::new(store.clone(), Contrary, dispatcher(&store)).unwrap();
    let mut stop = Runner::new(store.clone(), reactions);
    match stop.catch_up().await.unwrap_err() {
        ProjectionError::Command {
            runner,
            command,
            transient: false,
            ..
        } => {
            assert_eq!(runner, "contrary_stop");
            assert!(command.ends_with("RejectOrder"), "{command}");
        }
        other => panic!("expected a refused command, got {other:?}"),
    }
    assert_eq!(store.checkpoint("contrary_stop").await.unwrap(), 0);
    let mut stop = stop.park_after(1);
    stop.catch_up().await.unwrap();
    let parked = stop.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert!(
        parked[0].error.contains("already decided"),
        "{}",
        parked[0].error
    );
    // The confirmation went through once, under its derived id.
    assert_eq!(
        stream_types(&store, "Order", "r1").await,
        ["OrderPlaced", "OrderConfirmed"]
    );

    // Ignore: recorded as an ignored entry, not parked; the runner moves on.
    place(&store, "r2", 1).await;
    let reactions = Reactions::new(store.clone(), ContraryIgnoring, dispatcher(&store)).unwrap();
    let mut ignore = Runner::new(store.clone(), reactions);
    ignore.catch_up().await.unwrap();
    assert!(ignore.parked().await.unwrap().is_empty());
    let recorded = store.parked(Some("contrary_ignore"), true).await.unwrap();
    // r1 was decided already (both commands refused), r2 only refuses the rejection.
    assert_eq!(recorded.len(), 3);
    assert!(recorded
        .iter()
        .all(|p| p.resolution == Some(Resolution::Ignored) && p.error.contains("rejected")));
    assert_eq!(
        stream_types(&store, "Order", "r2").await,
        ["OrderPlaced", "OrderConfirmed"]
    );

    // Compensate: the `#[rejected]` handler's command is sent instead.
    place(&store, "r3", 1).await;
    let reactions =
        Reactions::new(store.clone(), ContraryCompensating, dispatcher(&store)).unwrap();
    let mut compensate = Runner::new(store.clone(), reactions);
    compensate.catch_up().await.unwrap();
    for order in ["r1", "r2", "r3"] {
        assert_eq!(
            stream_types(&store, "Inventory", &format!("refunds-{order}-1")).await,
            ["StockAdded"],
            "{order}"
        );
    }
    // Redelivered, the compensation is not sent again.
    let head = store.head().await.unwrap();
    compensate.reset().await.unwrap();
    compensate.catch_up().await.unwrap();
    assert_eq!(store.head().await.unwrap(), head);
}

#[tokio::test]
async fn memory_choreography() {
    choreography(MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_unrouted_commands_fail_at_setup() {
    unrouted(MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_refusals() {
    refusals(MemoryStore::new()).await;
}

async fn sqlite() -> (annals_tests::TempDir, SqliteStore) {
    let dir = annals_tests::TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path().join("flows.db"))
        .await
        .unwrap();
    (dir, store)
}

#[tokio::test]
async fn sqlite_choreography() {
    let (_dir, store) = sqlite().await;
    choreography(store).await;
}

#[tokio::test]
async fn sqlite_unrouted_commands_fail_at_setup() {
    let (_dir, store) = sqlite().await;
    unrouted(store).await;
}

#[tokio::test]
async fn sqlite_refusals() {
    let (_dir, store) = sqlite().await;
    refusals(store).await;
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::future::Future;

    use annals::{PgStore, Uuid};

    async fn with_store<F, Fut>(case: F)
    where
        F: FnOnce(PgStore) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let schema = format!("flows_{}", Uuid::new_v4().simple());
        let url = annals_tests::database_url();
        let store = PgStore::options()
            .schema(schema.as_str())
            .open(&url)
            .await
            .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {url}: {e}"));
        let outcome = tokio::spawn(case(store.clone())).await;
        store.pool().close().await;
        annals_tests::drop_schema(&url, &schema).await.unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic.into_panic());
        }
    }

    #[tokio::test]
    async fn pg_choreography() {
        with_store(super::choreography).await;
    }

    #[tokio::test]
    async fn pg_unrouted_commands_fail_at_setup() {
        with_store(super::unrouted).await;
    }

    #[tokio::test]
    async fn pg_refusals() {
        with_store(super::refusals).await;
    }
}
