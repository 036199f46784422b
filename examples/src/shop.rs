//! The online shop: orders and inventory, and a read model listing orders with their status.
//!
//! Placing an order asks the inventory to reserve stock. The inventory answers with
//! `StockReserved` or, when there is not enough, with an `OutOfStock` event (a fact worth
//! keeping, not an error), and the order is confirmed or rejected accordingly. All three
//! commands share the order's correlation id.

use annals::{
    aggregate, projection, Command, CommitMeta, Event, EventMeta, Events, ExecuteError, Repository,
    SqliteStore, SqliteTx, Uuid,
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

/// The inventory's events.
#[derive(Debug, Clone, PartialEq, Events)]
pub enum InventoryEvent {
    /// See [`StockAdded`].
    StockAdded(StockAdded),
    /// See [`StockReserved`].
    StockReserved(StockReserved),
    /// See [`OutOfStock`].
    OutOfStock(OutOfStock),
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

/// The stock of one product.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Units not reserved.
    pub available: u32,
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

/// An order's events.
#[derive(Debug, Clone, PartialEq, Events)]
pub enum OrderEvent {
    /// See [`OrderPlaced`].
    OrderPlaced(OrderPlaced),
    /// See [`OrderConfirmed`].
    OrderConfirmed(OrderConfirmed),
    /// See [`OrderRejected`].
    OrderRejected(OrderRejected),
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

/// Where an order stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Not placed.
    #[default]
    None,
    /// Waiting for stock.
    Placed,
    /// Will ship.
    Confirmed,
    /// Will not ship.
    Rejected,
}

/// One order.
#[derive(Debug, Default)]
pub struct Order {
    /// Where it stands.
    pub status: OrderStatus,
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

    fn undecided(&self) -> Result<(), ShopError> {
        match self.status {
            OrderStatus::Confirmed => Err(ShopError::AlreadyDecided("confirmed")),
            OrderStatus::Rejected => Err(ShopError::AlreadyDecided("rejected")),
            _ => Ok(()),
        }
    }

    #[apply]
    fn placed(&mut self, _: &OrderPlaced) {
        self.status = OrderStatus::Placed;
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
    /// `placed`, `confirmed` or `rejected: ..`.
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

// ---- the process ----

/// The shop's command side: both repositories over one store.
pub struct Shop {
    /// Orders.
    pub orders: Repository<Order, SqliteStore>,
    /// Inventory.
    pub inventory: Repository<Inventory, SqliteStore>,
}

/// What happened to a placed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Stock was reserved and the order confirmed.
    Confirmed,
    /// Not enough stock: the order was rejected.
    Rejected {
        /// Units available when it was placed.
        available: u32,
    },
}

impl Shop {
    /// The shop over `store`.
    pub fn new(store: SqliteStore) -> Self {
        Shop {
            orders: Repository::new(store.clone()),
            inventory: Repository::new(store),
        }
    }

    /// Places an order, reserves its stock, then confirms or rejects it. The three
    /// commands carry the same correlation id, and each names what caused it.
    pub async fn place_order(
        &self,
        order: &str,
        sku: &str,
        quantity: u32,
    ) -> Result<Placement, ExecuteError<ShopError>> {
        let correlation = Uuid::new_v4();
        let meta = |causation: Uuid| {
            CommitMeta::new()
                .command_id(Uuid::new_v4())
                .correlation_id(correlation)
                .causation_id(causation)
        };
        let place = PlaceOrder {
            order: order.into(),
            sku: sku.into(),
            quantity,
        };
        self.orders.execute_with(place, meta(correlation)).await?;
        let reserve = ReserveStock {
            sku: sku.into(),
            order: order.into(),
            quantity,
        };
        let reserved = self
            .inventory
            .execute_with(reserve, meta(correlation))
            .await?;
        match reserved.events.first() {
            Some(InventoryEvent::OutOfStock(e)) => {
                let reason = format!(
                    "out of stock ({} of {} available)",
                    e.available, e.requested
                );
                let reject = RejectOrder {
                    order: order.into(),
                    reason,
                };
                self.orders.execute_with(reject, meta(correlation)).await?;
                Ok(Placement::Rejected {
                    available: e.available,
                })
            }
            _ => {
                self.orders
                    .execute_with(
                        ConfirmOrder {
                            order: order.into(),
                        },
                        meta(correlation),
                    )
                    .await?;
                Ok(Placement::Confirmed)
            }
        }
    }
}
