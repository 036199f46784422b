//! The shop's inventory service: its own SQLite database, fed by the orders service over
//! NATS JetStream (feature `nats`).
//!
//! It consumes `OrderPlaced` from the bus, reserves stock in its own store (the command's
//! id is the triggering event's id, so a redelivered order reserves nothing twice) and
//! relays its own events (`StockReserved`, `OutOfStock`, `StockAdded`) to the bus, where
//! the orders service (`shop_orders`) picks them up. Start both services, then place
//! orders (NATS with JetStream at `$NATS_URL`, default 127.0.0.1:4222):
//!
//! ```text
//! cargo run -p annals-examples --features nats --example shop_inventory -- stock widget 10
//! cargo run -p annals-examples --features nats --example shop_inventory -- serve &
//! cargo run -p annals-examples --features nats --example shop_orders -- serve &
//! cargo run -p annals-examples --features nats --example shop_orders -- place widget 3
//! cargo run -p annals-examples --features nats --example shop_orders -- place widget 30
//! cargo run -p annals-examples --features nats --example shop_inventory -- show widget
//! ```
//!
//! The data lives in `inventory.db` (`--db PATH`); the bus's JetStream stream is `SHOP`
//! (subjects `shop.>`), created by whichever service starts first.

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use annals::nats::async_nats::{self, jetstream};
use annals::nats::{JetStreamSource, Publisher, Subjects};
use annals::{
    projection, Aggregate, CommitMeta, EventMeta, ExecuteError, Repository, Runner, SqliteStore,
};
use annals_examples::shop::{AddStock, Inventory, Order, OrderPlaced, ReserveStock};
use clap::{Parser, Subcommand};

/// The shop's inventory service.
#[derive(Debug, Parser)]
struct Cli {
    /// The database file.
    #[arg(long, value_name = "PATH", default_value = "inventory.db")]
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
    /// Reserve stock for the orders placed on the bus and publish this service's events,
    /// until Ctrl-C.
    Serve,
    /// Add units of a product.
    Stock {
        /// The product.
        sku: String,
        /// Units to add.
        quantity: u32,
    },
    /// The units of a product not reserved.
    Show {
        /// The product.
        sku: String,
    },
}

/// Reserves stock for each order placed in the orders service.
struct ReserveOnOrder {
    inventory: Repository<Inventory, SqliteStore>,
}

#[projection(name = "inventory_on_orders")]
impl ReserveOnOrder {
    #[on]
    async fn placed(
        &mut self,
        e: &OrderPlaced,
        m: &EventMeta,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        let command = ReserveStock {
            sku: e.sku.clone(),
            order: m.stream_id.clone(),
            quantity: e.quantity,
        };
        // The event's id as the command's: a redelivered event reserves nothing twice.
        let meta = CommitMeta::new()
            .command_id(m.event_id)
            .correlation_id(m.correlation_id.unwrap_or(m.event_id))
            .causation_id(m.event_id);
        match self.inventory.execute_with(command, meta).await {
            Ok(executed) => {
                println!("order {}: {:?}", m.stream_id, executed.events);
                Ok(())
            }
            Err(ExecuteError::Rejected(refused)) => {
                println!("order {}: refused: {refused}", m.stream_id);
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
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
    let inventory = Repository::<Inventory, _>::new(store.clone());
    match cli.command {
        Command::Stock { sku, quantity } => {
            inventory.execute(AddStock { sku, quantity }).await?;
            println!("stock added; run `serve` to publish it");
        }
        Command::Show { sku } => {
            let loaded = inventory.load(&sku).await?;
            println!("{sku}: {} units available", loaded.state.available);
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
            .named("inventory_relay")
            .on_retry(report);
            // The orders service's `OrderPlaced`, in from the bus; a message that keeps
            // failing is parked (see `annals::admin` to list and retry).
            let source = JetStreamSource::new(jetstream, "SHOP", "inventory")
                .filter_subject(format!("shop.{}.OrderPlaced", Order::NAME));
            // The handler sends commands to this store's repository, outside the runner's
            // transaction, so its checkpoint and parked messages live in a file of their own
            // (SQLite has one writer at a time); the command ids make redeliveries harmless.
            let checkpoints = SqliteStore::open(cli.db.with_extension("bus.db")).await?;
            let mut reserve =
                Runner::with_source(checkpoints, source, ReserveOnOrder { inventory })
                    .park_after(3)
                    .on_retry(report);
            println!("inventory service: following the bus at {url} (Ctrl-C stops)");
            tokio::select! {
                result = relay.run(std::future::pending()) => result?,
                result = reserve.run(std::future::pending()) => result?,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    }
    Ok(())
}
