//! The online shop: orders, inventory and a read model of orders with their status.
//!
//! ```text
//! cargo run --example shop                       # the choreography as it happens
//! cargo run --example shop -- stock widget 10    # add stock
//! cargo run --example shop -- order widget 3     # place an order (the workflows run)
//! cargo run --example shop -- pay <ORDER>        # pay a confirmed order
//! cargo run --example shop -- notifications      # customer service's inbox
//! cargo run --example shop -- orders             # list orders with their status
//! cargo run --example shop -- levels             # stock levels
//! cargo run --example shop -- admin --help       # the admin commands:
//! cargo run --example shop -- admin streams list
//! cargo run --example shop -- admin streams show Order <ID>
//! cargo run --example shop -- admin projections status
//! cargo run --example shop -- admin projections rebuild shop_view
//! cargo run --example shop -- admin verify
//! ```
//! The data lives in `shop.db` (or `$SHOP_DB`, or `--db PATH`).

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use annals::admin::{Admin, AdminArgs};
use annals::store::{EventFilter, EventLog};
use annals::{ProjectionRunner, SqliteStore, Uuid};
use annals_examples::shop::{
    self, AddStock, Inventory, Order, OrderPayment, PayOrder, Shop, ShopNotifications, ShopView,
    Workflows,
};
use clap::{Parser, Subcommand};

/// The online shop: orders, inventory and a read model of orders with their status.
#[derive(Debug, Parser)]
struct Cli {
    /// The database file [default: $SHOP_DB, else shop.db]
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// What to do (a short demo when left out).
    #[command(subcommand)]
    command: Option<ShopCommand>,
}

#[derive(Debug, Subcommand)]
enum ShopCommand {
    /// Add units of a product.
    Stock {
        /// The product.
        sku: String,
        /// Units to add.
        quantity: u32,
    },
    /// Place an order; the workflows reserve the stock, then confirm or reject it.
    Order {
        /// The product.
        sku: String,
        /// Units to order.
        quantity: u32,
    },
    /// Pay a confirmed order (before its payment window closes).
    Pay {
        /// The order.
        order: String,
    },
    /// Customer service's notifications.
    Notifications,
    /// List orders with their status.
    Orders,
    /// Stock levels per product.
    Levels,
    /// Inspect and maintain the event store: streams, projections, parked events, process
    /// managers, verify.
    Admin(AdminArgs),
}

#[tokio::main]
async fn main() -> Result<ExitCode, Box<dyn Error>> {
    let cli = Cli::parse();
    let path = cli.db.unwrap_or_else(|| {
        std::env::var_os("SHOP_DB").map_or_else(|| PathBuf::from("shop.db"), PathBuf::from)
    });
    let store = SqliteStore::open(&path).await?;
    shop::create_view(&store).await?;
    shop::create_notifications(&store).await?;
    let shop = Shop::new(store.clone());
    let mut view = ProjectionRunner::new(store.clone(), ShopView);
    let mut inbox = ProjectionRunner::new(store.clone(), ShopNotifications);
    let mut flows = Workflows::new(&store)?;

    match cli.command {
        None => {
            println!(
                "demo on {}: 5 widgets in stock, three orders, one paid; payment window {:?}",
                path.display(),
                shop::pay_window()
            );
            let mut seen = store.head().await?;
            shop.inventory
                .execute(AddStock {
                    sku: "widget".into(),
                    quantity: 5,
                })
                .await?;
            let mut orders = Vec::new();
            for quantity in [3, 4, 2] {
                let order = new_order_id();
                shop.place_order(&order, "widget", quantity).await?;
                println!("user: PlaceOrder {order} ({quantity} widget)");
                orders.push(order);
            }
            flows.settle().await?;
            seen = print_events(&store, seen).await?;
            println!("user: PayOrder {}", orders[0]);
            shop.orders
                .execute(PayOrder {
                    order: orders[0].clone(),
                })
                .await?;
            flows.settle().await?;
            seen = print_events(&store, seen).await?;
            println!("waiting for the payment window to close...");
            tokio::time::sleep(shop::pay_window()).await;
            flows.settle().await?;
            print_events(&store, seen).await?;
            view.catch_up().await?;
            inbox.catch_up().await?;
            print_orders(&store).await?;
            print_notifications(&store).await?;
        }
        Some(ShopCommand::Stock { sku, quantity }) => {
            shop.inventory
                .execute(AddStock {
                    sku: sku.clone(),
                    quantity,
                })
                .await?;
            println!("added {quantity} {sku}");
        }
        Some(ShopCommand::Order { sku, quantity }) => {
            let order = new_order_id();
            let seen = store.head().await?;
            shop.place_order(&order, &sku, quantity).await?;
            flows.settle().await?;
            print_events(&store, seen).await?;
        }
        Some(ShopCommand::Pay { order }) => {
            let seen = store.head().await?;
            flows.settle().await?;
            shop.orders.execute(PayOrder { order }).await?;
            flows.settle().await?;
            print_events(&store, seen).await?;
        }
        Some(ShopCommand::Orders) => {
            flows.settle().await?;
            view.catch_up().await?;
            print_orders(&store).await?;
        }
        Some(ShopCommand::Notifications) => {
            flows.settle().await?;
            inbox.catch_up().await?;
            print_notifications(&store).await?;
        }
        Some(ShopCommand::Levels) => {
            flows.settle().await?;
            view.catch_up().await?;
            for (sku, available) in shop::stock_levels(&store).await? {
                println!("{sku:<12} {available:>6}");
            }
        }
        Some(ShopCommand::Admin(args)) => {
            let admin = Admin::new(store)
                .aggregate::<Order>()
                .aggregate::<Inventory>()
                .projection(|| ShopView)
                .projection(|| ShopNotifications)
                .process::<OrderPayment>();
            return Ok(admin.run_args(&args).await);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn new_order_id() -> String {
    Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Prints the events after position `after`, each with the command and event that caused
/// it; returns the last position printed.
async fn print_events(store: &SqliteStore, after: u64) -> Result<u64, Box<dyn Error>> {
    let batch = store.read_log(&after, 1000, &EventFilter::all()).await?;
    let mut last = after;
    for event in &batch.events {
        let meta = &event.meta;
        let cause = meta
            .causation_id
            .map_or_else(|| "the user".to_owned(), |c| format!("event {}", short(c)));
        println!(
            "  {:>3} {:<10} {:<9} {:<15} (event {}, caused by {})",
            meta.position,
            meta.stream_type,
            meta.stream_id,
            meta.event_type,
            short(meta.event_id),
            cause
        );
        last = meta.position;
    }
    Ok(last)
}

/// The random end of a time-ordered id (its start is the time, the same for close events).
fn short(id: Uuid) -> String {
    id.simple().to_string()[24..].to_owned()
}

async fn print_notifications(store: &SqliteStore) -> Result<(), Box<dyn Error>> {
    println!("customer service:");
    for message in shop::notifications(store).await? {
        println!("  {message}");
    }
    Ok(())
}

async fn print_orders(store: &SqliteStore) -> Result<(), Box<dyn Error>> {
    println!("{:<10} {:<10} {:>4}  status", "order", "sku", "qty");
    for row in shop::list_orders(store).await? {
        println!(
            "{:<10} {:<10} {:>4}  {}",
            row.id, row.sku, row.quantity, row.status
        );
    }
    Ok(())
}
