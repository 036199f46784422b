//! The online shop: orders, inventory and a read model of orders with their status.
//!
//! ```text
//! cargo run --example shop                       # a short demo, then the orders list
//! cargo run --example shop -- stock widget 10    # add stock
//! cargo run --example shop -- order widget 3     # place an order
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
use annals::{ProjectionRunner, SqliteStore, Uuid};
use annals_examples::shop::{self, AddStock, Inventory, Order, Placement, Shop, ShopView};
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
    /// Place an order: reserve the stock, then confirm or reject the order.
    Order {
        /// The product.
        sku: String,
        /// Units to order.
        quantity: u32,
    },
    /// List orders with their status.
    Orders,
    /// Stock levels per product.
    Levels,
    /// Inspect and maintain the event store: streams, projections, verify.
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
    let shop = Shop::new(store.clone());
    let mut view = ProjectionRunner::new(store.clone(), ShopView);

    match cli.command {
        None => {
            println!(
                "demo on {}: 5 widgets in stock, then three orders",
                path.display()
            );
            shop.inventory
                .execute(AddStock {
                    sku: "widget".into(),
                    quantity: 5,
                })
                .await?;
            for quantity in [3, 4, 2] {
                place(&shop, "widget", quantity).await?;
            }
            view.catch_up().await?;
            print_orders(&store).await?;
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
        Some(ShopCommand::Order { sku, quantity }) => place(&shop, &sku, quantity).await?,
        Some(ShopCommand::Orders) => {
            view.catch_up().await?;
            print_orders(&store).await?;
        }
        Some(ShopCommand::Levels) => {
            view.catch_up().await?;
            for (sku, available) in shop::stock_levels(&store).await? {
                println!("{sku:<12} {available:>6}");
            }
        }
        Some(ShopCommand::Admin(args)) => {
            let admin = Admin::new(store)
                .aggregate::<Order>()
                .aggregate::<Inventory>()
                .projection(|| ShopView);
            return Ok(admin.run_args(&args).await);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn place(shop: &Shop, sku: &str, quantity: u32) -> Result<(), Box<dyn Error>> {
    let order = Uuid::new_v4().simple().to_string()[..8].to_owned();
    match shop.place_order(&order, sku, quantity).await? {
        Placement::Confirmed => println!("order {order}: {quantity} {sku} confirmed"),
        Placement::Rejected { available } => {
            println!("order {order}: {quantity} {sku} rejected, only {available} available");
        }
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
