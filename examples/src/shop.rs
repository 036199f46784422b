//! The online shop: orders and inventory, and a read model listing orders with their status.
//!
//! A choreography: the user sends only `PlaceOrder`. The inventory reacts to `OrderPlaced`
//! by reserving stock ([`InventoryPolicy`]) and answers with `StockReserved` or, when there
//! is not enough, with an `OutOfStock` event (a fact worth keeping, not an error); the order
//! reacts to the answer by confirming or rejecting itself ([`OrderPolicy`]); customer
//! service is told of every `OutOfStock` ([`ShopNotifications`]); and a confirmed order not
//! paid within [`pay_window`] is cancelled ([`OrderPayment`]), which releases its stock.
//! Every command of an order's flow carries the order's correlation id and names the event
//! that caused it.

use std::time::Duration;

use annals::store::{CheckpointStore, EventLog, ParkingStore, ProcessStore};
use annals::workflow::{Ctx, Dispatcher, Processes, Reactions};
use annals::{
    aggregate, process, projection, reactor, Command, CommitMeta, Event, EventMeta, Events,
    ExecuteError, ProjectionError, Repository, Runner, SqliteStore, SqliteTx, Uuid,
};
use serde::{Deserialize, Serialize};

// ---- inventory ----

/// Stock arrived.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
pub struct StockAdded {
    /// Units added.
    pub quantity: u32,
}

/// Units were set aside for an order.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
pub struct StockReserved {
    /// The order.
    pub order: String,
    /// Units reserved.
    pub quantity: u32,
}

/// An order asked for more than was available.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
pub struct OutOfStock {
    /// The order.
    pub order: String,
    /// Units asked for.
    pub requested: u32,
    /// Units available.
    pub available: u32,
}

/// Units reserved for a cancelled order were put back.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
pub struct StockReleased {
    /// The order.
    pub order: String,
    /// Units released.
    pub quantity: u32,
}

/// The inventory's events.
#[derive(Debug, Clone, PartialEq, Events)]
pub enum InventoryEvent {
    /// See [`StockAdded`].
    StockAdded(StockAdded),
    /// See [`StockReserved`].
    StockReserved(StockReserved),
    /// See [`OutOfStock`].
    OutOfStock(OutOfStock),
    /// See [`StockReleased`].
    StockReleased(StockReleased),
}

/// Why the shop refused a command.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ShopError {
    /// Quantities must be positive.
    #[error("quantity must be greater than zero")]
    ZeroQuantity,
    /// The order was already confirmed or rejected.
    #[error("order is already {0}")]
    AlreadyDecided(&'static str),
    /// Only a confirmed order can be paid.
    #[error("order is {0}, not confirmed")]
    NotPayable(&'static str),
    /// More units released than reserved.
    #[error("releasing more units than are reserved")]
    NotReserved,
}

/// Add units of a product.
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Inventory)]
pub struct AddStock {
    /// The product.
    #[command(id)]
    pub sku: String,
    /// Units.
    pub quantity: u32,
}

/// Reserve units of a product for an order.
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Inventory)]
pub struct ReserveStock {
    /// The product.
    #[command(id)]
    pub sku: String,
    /// The order.
    pub order: String,
    /// Units.
    pub quantity: u32,
}

/// Put back the units reserved for a cancelled order.
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Inventory)]
pub struct ReleaseStock {
    /// The product.
    #[command(id)]
    pub sku: String,
    /// The order.
    pub order: String,
    /// Units.
    pub quantity: u32,
}

/// The stock of one product.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Units not reserved.
    pub available: u32,
    /// Units reserved for orders and not released.
    pub reserved: u32,
}

#[aggregate(id = String, event = InventoryEvent, error = ShopError)]
impl Inventory {
    #[command(any)]
    fn add(&self, cmd: AddStock) -> Result<StockAdded, ShopError> {
        if cmd.quantity == 0 {
            return Err(ShopError::ZeroQuantity);
        }
        Ok(StockAdded {
            quantity: cmd.quantity,
        })
    }

    #[command(any)]
    fn reserve(&self, cmd: ReserveStock) -> Result<InventoryEvent, ShopError> {
        if cmd.quantity == 0 {
            return Err(ShopError::ZeroQuantity);
        }
        if cmd.quantity > self.available {
            return Ok(OutOfStock {
                order: cmd.order,
                requested: cmd.quantity,
                available: self.available,
            }
            .into());
        }
        Ok(StockReserved {
            order: cmd.order,
            quantity: cmd.quantity,
        }
        .into())
    }

    #[command]
    fn release(&self, cmd: ReleaseStock) -> Result<StockReleased, ShopError> {
        if cmd.quantity > self.reserved {
            return Err(ShopError::NotReserved);
        }
        Ok(StockReleased {
            order: cmd.order,
            quantity: cmd.quantity,
        })
    }

    #[apply]
    fn added(&mut self, e: &StockAdded) {
        self.available += e.quantity;
    }

    #[apply]
    fn reserved(&mut self, e: &StockReserved) {
        self.available -= e.quantity;
        self.reserved += e.quantity;
    }

    #[apply]
    fn released(&mut self, e: &StockReleased) {
        self.available += e.quantity;
        self.reserved -= e.quantity;
    }

    #[apply]
    fn out_of_stock(&mut self, _: &OutOfStock) {}
}

// ---- orders ----

/// An order was placed.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The product.
    pub sku: String,
    /// Units.
    pub quantity: u32,
}

/// The stock was reserved: the order will ship.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
pub struct OrderConfirmed {}

/// The order cannot be served.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
pub struct OrderRejected {
    /// Why.
    pub reason: String,
}

/// The order was paid.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
pub struct OrderPaid {}

/// The order was cancelled (not paid in time); its stock goes back.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// The product.
    pub sku: String,
    /// Units to put back.
    pub quantity: u32,
    /// Why.
    pub reason: String,
}

/// An order's events.
#[derive(Debug, Clone, PartialEq, Events)]
pub enum OrderEvent {
    /// See [`OrderPlaced`].
    OrderPlaced(OrderPlaced),
    /// See [`OrderConfirmed`].
    OrderConfirmed(OrderConfirmed),
    /// See [`OrderRejected`].
    OrderRejected(OrderRejected),
    /// See [`OrderPaid`].
    OrderPaid(OrderPaid),
    /// See [`OrderCancelled`].
    OrderCancelled(OrderCancelled),
}

/// Place an order.
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
pub struct PlaceOrder {
    /// The new order's id.
    #[command(id)]
    pub order: String,
    /// The product.
    pub sku: String,
    /// Units.
    pub quantity: u32,
}

/// Confirm an order whose stock is reserved.
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
pub struct ConfirmOrder {
    /// The order.
    #[command(id)]
    pub order: String,
}

/// Reject an order.
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
pub struct RejectOrder {
    /// The order.
    #[command(id)]
    pub order: String,
    /// Why.
    pub reason: String,
}

/// Pay a confirmed order.
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
pub struct PayOrder {
    /// The order.
    #[command(id)]
    pub order: String,
}

/// Cancel an order not paid in time (nothing happens to an order paid, rejected or
/// cancelled already).
#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Order)]
pub struct CancelOrder {
    /// The order.
    #[command(id)]
    pub order: String,
    /// Why.
    pub reason: String,
}

/// Where an order stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Not placed.
    #[default]
    None,
    /// Waiting for stock.
    Placed,
    /// Stock reserved, waiting for payment.
    Confirmed,
    /// Will not ship.
    Rejected,
    /// Paid: will ship.
    Paid,
    /// Not paid in time; its stock was put back.
    Cancelled,
}

impl OrderStatus {
    fn name(self) -> &'static str {
        match self {
            OrderStatus::None => "not placed",
            OrderStatus::Placed => "placed",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Paid => "paid",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

/// One order.
#[derive(Debug, Default)]
pub struct Order {
    /// Where it stands.
    pub status: OrderStatus,
    /// The product.
    pub sku: String,
    /// Units.
    pub quantity: u32,
}

#[aggregate(id = String, event = OrderEvent, error = ShopError)]
impl Order {
    #[command(create)]
    fn place(&self, cmd: PlaceOrder) -> Result<OrderPlaced, ShopError> {
        if cmd.quantity == 0 {
            return Err(ShopError::ZeroQuantity);
        }
        Ok(OrderPlaced {
            sku: cmd.sku,
            quantity: cmd.quantity,
        })
    }

    #[command]
    fn confirm(&self, _: ConfirmOrder) -> Result<OrderConfirmed, ShopError> {
        self.undecided()?;
        Ok(OrderConfirmed {})
    }

    #[command]
    fn reject(&self, cmd: RejectOrder) -> Result<OrderRejected, ShopError> {
        self.undecided()?;
        Ok(OrderRejected { reason: cmd.reason })
    }

    #[command]
    fn pay(&self, _: PayOrder) -> Result<OrderPaid, ShopError> {
        if self.status != OrderStatus::Confirmed {
            return Err(ShopError::NotPayable(self.status.name()));
        }
        Ok(OrderPaid {})
    }

    #[command]
    fn cancel(&self, cmd: CancelOrder) -> Result<Option<OrderCancelled>, ShopError> {
        // A payment that came first wins: cancelling then changes nothing.
        if self.status != OrderStatus::Confirmed {
            return Ok(None);
        }
        Ok(Some(OrderCancelled {
            sku: self.sku.clone(),
            quantity: self.quantity,
            reason: cmd.reason,
        }))
    }

    fn undecided(&self) -> Result<(), ShopError> {
        match self.status {
            OrderStatus::None | OrderStatus::Placed => Ok(()),
            other => Err(ShopError::AlreadyDecided(other.name())),
        }
    }

    #[apply]
    fn placed(&mut self, e: &OrderPlaced) {
        self.status = OrderStatus::Placed;
        self.sku.clone_from(&e.sku);
        self.quantity = e.quantity;
    }

    #[apply]
    fn paid(&mut self, _: &OrderPaid) {
        self.status = OrderStatus::Paid;
    }

    #[apply]
    fn cancelled(&mut self, _: &OrderCancelled) {
        self.status = OrderStatus::Cancelled;
    }

    #[apply]
    fn confirmed(&mut self, _: &OrderConfirmed) {
        self.status = OrderStatus::Confirmed;
    }

    #[apply]
    fn rejected(&mut self, _: &OrderRejected) {
        self.status = OrderStatus::Rejected;
    }
}

// ---- the read model ----

/// Orders with their status, and stock levels, in two tables of the shop's SQLite file,
/// written in the same transaction as the projection's checkpoint.
#[derive(Debug, Default)]
pub struct ShopView;

/// Creates the read model's tables if missing.
pub async fn create_view(store: &SqliteStore) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS shop_orders (
             id TEXT PRIMARY KEY, sku TEXT NOT NULL, quantity INTEGER NOT NULL,
             status TEXT NOT NULL, position INTEGER NOT NULL)",
    )
    .execute(store.pool())
    .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS shop_stock (sku TEXT PRIMARY KEY, available INTEGER NOT NULL)",
    )
    .execute(store.pool())
    .await?;
    Ok(())
}

#[projection(name = "shop_view")]
impl ShopView {
    #[on]
    async fn placed(
        &mut self,
        e: &OrderPlaced,
        m: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO shop_orders (id, sku, quantity, status, position) VALUES (?, ?, ?, 'placed', ?)",
        )
        .bind(&m.stream_id)
        .bind(&e.sku)
        .bind(e.quantity)
        .bind(i64::try_from(m.position).unwrap_or(i64::MAX))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    #[on]
    async fn confirmed(
        &mut self,
        _: &OrderConfirmed,
        m: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), sqlx::Error> {
        set_status(tx, &m.stream_id, "confirmed").await
    }

    #[on]
    async fn rejected(
        &mut self,
        e: &OrderRejected,
        m: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), sqlx::Error> {
        set_status(tx, &m.stream_id, &format!("rejected: {}", e.reason)).await
    }

    #[on]
    async fn paid(
        &mut self,
        _: &OrderPaid,
        m: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), sqlx::Error> {
        set_status(tx, &m.stream_id, "paid").await
    }

    #[on]
    async fn cancelled(
        &mut self,
        e: &OrderCancelled,
        m: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), sqlx::Error> {
        set_status(tx, &m.stream_id, &format!("cancelled: {}", e.reason)).await
    }

    #[on]
    async fn stock_released(
        &mut self,
        e: &StockReleased,
        m: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), sqlx::Error> {
        change_stock(tx, &m.stream_id, i64::from(e.quantity)).await
    }

    #[on]
    async fn stock_added(
        &mut self,
        e: &StockAdded,
        m: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), sqlx::Error> {
        change_stock(tx, &m.stream_id, i64::from(e.quantity)).await
    }

    #[on]
    async fn stock_reserved(
        &mut self,
        e: &StockReserved,
        m: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), sqlx::Error> {
        change_stock(tx, &m.stream_id, -i64::from(e.quantity)).await
    }

    #[reset]
    async fn truncate(&mut self, tx: &mut SqliteTx) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM shop_orders")
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM shop_stock")
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

async fn set_status(tx: &mut SqliteTx, order: &str, status: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE shop_orders SET status = ? WHERE id = ?")
        .bind(status)
        .bind(order)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn change_stock(tx: &mut SqliteTx, sku: &str, delta: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO shop_stock (sku, available) VALUES (?, ?)
         ON CONFLICT (sku) DO UPDATE SET available = available + excluded.available",
    )
    .bind(sku)
    .bind(delta)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One row of the orders list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    /// Order id.
    pub id: String,
    /// Product.
    pub sku: String,
    /// Units.
    pub quantity: i64,
    /// `placed`, `confirmed`, `rejected: ..`, `paid` or `cancelled: ..`.
    pub status: String,
}

/// The orders list, oldest first.
pub async fn list_orders(store: &SqliteStore) -> Result<Vec<OrderRow>, sqlx::Error> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT id, sku, quantity, status FROM shop_orders ORDER BY position")
        .fetch_all(store.pool())
        .await?;
    rows.iter()
        .map(|r| {
            Ok(OrderRow {
                id: r.try_get("id")?,
                sku: r.try_get("sku")?,
                quantity: r.try_get("quantity")?,
                status: r.try_get("status")?,
            })
        })
        .collect()
}

/// Stock levels per product.
pub async fn stock_levels(store: &SqliteStore) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT sku, available FROM shop_stock ORDER BY sku")
        .fetch_all(store.pool())
        .await
}

// ---- notifications: customer service hears of every shortage ----

/// Customer service's inbox: one entry per `OutOfStock` event (its id is the key), in the
/// shop's SQLite file, written with the projection's checkpoint.
#[derive(Debug, Default)]
pub struct ShopNotifications;

/// Creates the notifications table if missing.
pub async fn create_notifications(store: &SqliteStore) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS shop_notifications (
             event_id TEXT PRIMARY KEY, order_id TEXT NOT NULL, message TEXT NOT NULL,
             position INTEGER NOT NULL)",
    )
    .execute(store.pool())
    .await?;
    Ok(())
}

#[projection(name = "shop_notifications")]
impl ShopNotifications {
    #[on]
    async fn out_of_stock(
        &mut self,
        e: &OutOfStock,
        m: &EventMeta,
        tx: &mut SqliteTx,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO shop_notifications (event_id, order_id, message, position) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(m.event_id.hyphenated().to_string())
        .bind(&e.order)
        .bind(format!(
            "order {}: {} {} asked, {} available",
            e.order, e.requested, m.stream_id, e.available
        ))
        .bind(i64::try_from(m.position).unwrap_or(i64::MAX))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    #[reset]
    async fn truncate(&mut self, tx: &mut SqliteTx) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM shop_notifications")
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// Customer service's messages, oldest first.
pub async fn notifications(store: &SqliteStore) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT message FROM shop_notifications ORDER BY position")
        .fetch_all(store.pool())
        .await
}

// ---- the choreography ----

/// The inventory's reactions: reserve stock for placed orders, put it back for cancelled
/// ones.
#[derive(Debug, Default)]
pub struct InventoryPolicy;

#[reactor(name = "inventory_policy")]
impl InventoryPolicy {
    #[on]
    fn order_placed(&self, e: &OrderPlaced, m: &EventMeta) -> ReserveStock {
        ReserveStock {
            sku: e.sku.clone(),
            order: m.stream_id.clone(),
            quantity: e.quantity,
        }
    }

    #[on]
    fn order_cancelled(&self, e: &OrderCancelled, m: &EventMeta) -> ReleaseStock {
        ReleaseStock {
            sku: e.sku.clone(),
            order: m.stream_id.clone(),
            quantity: e.quantity,
        }
    }
}

/// The orders' reactions to the inventory's answers.
#[derive(Debug, Default)]
pub struct OrderPolicy;

#[reactor(name = "order_policy")]
impl OrderPolicy {
    #[on]
    fn stock_reserved(&self, e: &StockReserved) -> ConfirmOrder {
        ConfirmOrder {
            order: e.order.clone(),
        }
    }

    #[on]
    fn out_of_stock(&self, e: &OutOfStock) -> RejectOrder {
        RejectOrder {
            order: e.order.clone(),
            reason: format!(
                "out of stock ({} of {} available)",
                e.available, e.requested
            ),
        }
    }
}

/// How long a confirmed order waits for its payment: `SHOP_PAY_WINDOW_MS` milliseconds,
/// 2 seconds by default.
pub fn pay_window() -> Duration {
    std::env::var("SHOP_PAY_WINDOW_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_millis)
}

/// The payment of one order: once confirmed, it must be paid within [`pay_window`], or it
/// is cancelled.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct OrderPayment {
    /// The order.
    pub order: String,
}

#[process(name = "order_payment", key = stream_id)]
impl OrderPayment {
    #[on]
    fn confirmed(&mut self, _: &OrderConfirmed, m: &EventMeta, ctx: &mut Ctx) {
        self.order.clone_from(&m.stream_id);
        ctx.schedule_in("payment_due", pay_window());
    }

    #[on]
    fn paid(&mut self, _: &OrderPaid, ctx: &mut Ctx) {
        ctx.complete();
    }

    #[on]
    fn rejected(&mut self, _: &OrderRejected, ctx: &mut Ctx) {
        ctx.complete();
    }

    #[on]
    fn cancelled(&mut self, _: &OrderCancelled, ctx: &mut Ctx) {
        ctx.complete();
    }

    #[deadline]
    fn payment_due(&mut self) -> CancelOrder {
        CancelOrder {
            order: self.order.clone(),
            reason: "not paid in time".into(),
        }
    }
}

/// The shop's three workflows on one store, each with its runner (checkpoint and lease
/// under the workflow's name).
pub struct Workflows<S: ProcessStore + ParkingStore> {
    /// [`InventoryPolicy`].
    pub inventory: Runner<Reactions<InventoryPolicy, S>, S>,
    /// [`OrderPolicy`].
    pub orders: Runner<Reactions<OrderPolicy, S>, S>,
    /// [`OrderPayment`].
    pub payments: Runner<Processes<OrderPayment, S>, S>,
}

impl<S> Workflows<S>
where
    S: ProcessStore + ParkingStore + CheckpointStore + EventLog,
{
    /// The workflows over `store`, sending through one dispatcher.
    pub fn new(store: &S) -> Result<Self, ProjectionError> {
        let dispatcher = Dispatcher::new()
            .route(Repository::<Order, _>::new(store.clone()))
            .route(Repository::<Inventory, _>::new(store.clone()));
        Ok(Workflows {
            inventory: Runner::new(
                store.clone(),
                Reactions::new(store.clone(), InventoryPolicy, dispatcher.clone())?,
            ),
            orders: Runner::new(
                store.clone(),
                Reactions::new(store.clone(), OrderPolicy, dispatcher.clone())?,
            ),
            payments: Runner::new(store.clone(), Processes::new(store.clone(), dispatcher)?),
        })
    }

    /// Catches every workflow up until none has anything left to do (each one's commands
    /// may be the next one's events); returns how many events they handled.
    pub async fn settle(&mut self) -> Result<u64, ProjectionError> {
        let mut total = 0;
        loop {
            let handled = self.inventory.catch_up().await?.handled
                + self.orders.catch_up().await?.handled
                + self.payments.catch_up().await?.handled;
            if handled == 0 {
                return Ok(total);
            }
            total += handled;
        }
    }
}

/// The shop's command side: both repositories over one store.
pub struct Shop {
    /// Orders.
    pub orders: Repository<Order, SqliteStore>,
    /// Inventory.
    pub inventory: Repository<Inventory, SqliteStore>,
}

impl Shop {
    /// The shop over `store`.
    pub fn new(store: SqliteStore) -> Self {
        Shop {
            orders: Repository::new(store.clone()),
            inventory: Repository::new(store),
        }
    }

    /// Places an order: the only command the user sends. The workflows take it from
    /// there, under a new correlation id, returned.
    pub async fn place_order(
        &self,
        order: &str,
        sku: &str,
        quantity: u32,
    ) -> Result<Uuid, ExecuteError<ShopError>> {
        let correlation = Uuid::new_v4();
        let place = PlaceOrder {
            order: order.into(),
            sku: sku.into(),
            quantity,
        };
        let meta = CommitMeta::new()
            .command_id(correlation)
            .correlation_id(correlation);
        self.orders.execute_with(place, meta).await?;
        Ok(correlation)
    }
}
