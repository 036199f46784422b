//! The shop's orders service: its own SQLite database, talking to the inventory service
//! (`shop_inventory`) over NATS JetStream (feature `nats`).
//!
//! Placing an order appends `OrderPlaced` here; the relay publishes it to the bus; the
//! inventory service reserves stock and publishes `StockReserved` or `OutOfStock`; this
//! service consumes those and confirms or rejects the order (the command's id is the
//! triggering event's id, so a redelivered answer decides nothing twice). Start both
//! services, then place orders (NATS with JetStream at `$NATS_URL`, default
//! 127.0.0.1:4222):
//!
//! ```text
//! cargo run -p annals-examples --features nats --example shop_inventory -- stock widget 10
//! cargo run -p annals-examples --features nats --example shop_inventory -- serve &
//! cargo run -p annals-examples --features nats --example shop_orders -- serve &
//! cargo run -p annals-examples --features nats --example shop_orders -- place widget 3
//! cargo run -p annals-examples --features nats --example shop_orders -- place widget 30
//! cargo run -p annals-examples --features nats --example shop_orders -- show <ORDER>
//! ```
//!
//! The data lives in `orders.db` (`--db PATH`); the bus's JetStream stream is `SHOP`
//! (subjects `shop.>`), created by whichever service starts first.

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use annals::nats::async_nats::{self, jetstream};
use annals::nats::{JetStreamSource, Publisher, Subjects};
use annals::{
    projection, Aggregate, CommitMeta, EventMeta, ExecuteError, Repository, Runner, SqliteStore,
    Uuid,
};
use annals_examples::shop::{
    ConfirmOrder, Inventory, Order, OrderStatus, OutOfStock, PlaceOrder, RejectOrder, StockReserved,
};
use clap::{Parser, Subcommand};

/// The shop's orders service.
#[derive(Debug, Parser)]
struct Cli {
    /// The database file.
    #[arg(long, value_name = "PATH", default_value = "orders.db")]
    db: PathBuf,
    /// The NATS server [default: $NATS_URL, else 127.0.0.1:4222]
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish this service's events and decide orders on the inventory's answers, until
    /// Ctrl-C.
    Serve,
    /// Place an order, then wait (up to 10 s) for the inventory's answer.
    Place {
        /// The product.
        sku: String,
        /// Units to order.
        quantity: u32,
    },
    /// An order's status.
    Show {
        /// The order.
        order: String,
    },
}

/// Confirms or rejects orders on the inventory service's answers.
struct DecideOrders {
    orders: Repository<Order, SqliteStore>,
}

impl DecideOrders {
    async fn decide<C>(&self, command: C, m: &EventMeta) -> Result<(), Box<dyn Error + Send + Sync>>
    where
        C: annals::Command<Aggregate = Order>,
        Order: annals::Handle<C>,
    {
        // The event's id as the command's: a redelivered answer decides nothing twice.
        let meta = CommitMeta::new()
            .command_id(m.event_id)
            .correlation_id(m.correlation_id.unwrap_or(m.event_id))
            .causation_id(m.event_id);
        match self.orders.execute_with(command, meta).await {
            Ok(executed) => {
                println!("order {}: {:?}", executed.stream_id, executed.events);
                Ok(())
            }
            Err(ExecuteError::Rejected(refused)) => {
                println!("{refused}");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }
}

#[projection(name = "orders_on_inventory")]
impl DecideOrders {
    #[on]
    async fn reserved(
        &mut self,
        e: &StockReserved,
        m: &EventMeta,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        let command = ConfirmOrder {
            order: e.order.clone(),
        };
        self.decide(command, m).await
    }

    #[on]
    async fn out_of_stock(
        &mut self,
        e: &OutOfStock,
        m: &EventMeta,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        let command = RejectOrder {
            order: e.order.clone(),
            reason: format!("{} requested, {} available", e.requested, e.available),
        };
        self.decide(command, m).await
    }
}

/// The bus's JetStream stream, created when absent.
pub async fn connect(url: &str) -> Result<jetstream::Context, Box<dyn Error>> {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(url)
        .await?;
    let jetstream = jetstream::new(client);
    jetstream
        .get_or_create_stream(jetstream::stream::Config {
            name: "SHOP".to_owned(),
            subjects: vec!["shop.>".to_owned()],
            ..Default::default()
        })
        .await?;
    Ok(jetstream)
}

/// Prints an outage the runners ride out.
fn report(error: &annals::ProjectionError, wait: Duration) {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(next) = cause {
        text = format!("{text}: {next}");
        cause = next.source();
    }
    eprintln!("retrying in {wait:?}: {text}");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let cli = Cli::parse();
    let store = SqliteStore::open(&cli.db).await?;
    let orders = Repository::<Order, _>::new(store.clone());
    match cli.command {
        Command::Place { sku, quantity } => {
            let order = Uuid::now_v7().simple().to_string();
            let meta = CommitMeta::new().correlation_id(Uuid::now_v7());
            let command = PlaceOrder {
                order: order.clone(),
                sku,
                quantity,
            };
            orders.execute_with(command, meta).await?;
            println!("order {order} placed");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let status = orders.load(&order).await?.state.status;
                if status != OrderStatus::Placed {
                    println!("order {order}: {status:?}");
                    break;
                }
                if Instant::now() > deadline {
                    println!("order {order}: no answer yet (are both services serving?)");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Command::Show { order } => {
            let status = orders.load(&order).await?.state.status;
            println!("order {order}: {status:?}");
        }
        Command::Serve => {
            let url = cli
                .nats
                .or_else(|| std::env::var("NATS_URL").ok())
                .unwrap_or_else(|| "127.0.0.1:4222".to_owned());
            let jetstream = connect(&url).await?;
            // This service's events, out to the bus.
            let mut relay = Runner::new(
                store.clone(),
                Publisher::new(jetstream.clone(), Subjects::prefix("shop")?),
            )
            .named("orders_relay")
            .on_retry(report);
            // The inventory's answers, in from the bus.
            let source = JetStreamSource::new(jetstream, "SHOP", "orders")
                .filter_subject(format!("shop.{}.>", Inventory::NAME));
            // The handler sends commands to this store's repository, outside the runner's
            // transaction, so its checkpoint and parked messages live in a file of their own
            // (SQLite has one writer at a time); the command ids make redeliveries harmless.
            let checkpoints = SqliteStore::open(cli.db.with_extension("bus.db")).await?;
            let mut decide = Runner::with_source(checkpoints, source, DecideOrders { orders })
                .park_after(3)
                .on_retry(report);
            println!("orders service: following the bus at {url} (Ctrl-C stops)");
            tokio::select! {
                result = relay.run(std::future::pending()) => result?,
                result = decide.run(std::future::pending()) => result?,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    }
    Ok(())
}
