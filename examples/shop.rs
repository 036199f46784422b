//! The online shop: orders, inventory and a read model of orders with their status.
//!
//! ```text
//! cargo run --example shop                       # a short demo, then the orders list
//! cargo run --example shop -- stock widget 10    # add stock
//! cargo run --example shop -- order widget 3     # place an order
//! cargo run --example shop -- orders             # list orders with their status
//! cargo run --example shop -- levels             # stock levels
//! cargo run --example shop -- rebuild            # rebuild the read model, with progress
//! cargo run --example shop -- status             # the projection's position and lag
//! ```
//! The data lives in `shop.db` (or `$SHOP_DB`).

use std::error::Error;
use std::io::Write;

use annals::{ProjectionRunner, SqliteStore, Uuid};
use annals_examples::shop::{self, AddStock, Placement, Shop, ShopView};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::var("SHOP_DB").unwrap_or_else(|_| "shop.db".to_owned());
    let store = SqliteStore::open(&path).await?;
    shop::create_view(&store).await?;
    let shop = Shop::new(store.clone());
    let mut view = ProjectionRunner::new(store.clone(), ShopView);

    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => {
            println!("demo on {path}: 5 widgets in stock, then three orders");
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
        ["stock", sku, quantity] => {
            let quantity = quantity.parse()?;
            shop.inventory
                .execute(AddStock {
                    sku: (*sku).into(),
                    quantity,
                })
                .await?;
            println!("added {quantity} {sku}");
        }
        ["order", sku, quantity] => place(&shop, sku, quantity.parse()?).await?,
        ["orders"] => {
            view.catch_up().await?;
            print_orders(&store).await?;
        }
        ["levels"] => {
            view.catch_up().await?;
            for (sku, available) in shop::stock_levels(&store).await? {
                println!("{sku:<12} {available:>6}");
            }
        }
        ["rebuild"] => {
            let done = view
                .rebuild(|p| {
                    let width = 40u64;
                    let filled = (p.position * width)
                        .checked_div(p.head)
                        .unwrap_or(width)
                        .min(width);
                    let bar: String = (0..width)
                        .map(|i| if i < filled { '#' } else { '.' })
                        .collect();
                    print!("\r[{bar}] {}/{} ({} events)", p.position, p.head, p.handled);
                    let _ = std::io::stdout().flush();
                })
                .await?;
            println!(
                "\nrebuilt: {} events handled up to position {}",
                done.handled, done.position
            );
        }
        ["status"] => {
            let status = view.status().await?;
            println!(
                "position {} of {}, lag {}",
                status.position,
                status.head,
                status.lag()
            );
        }
        _ => {
            eprintln!(
                "usage: shop [stock SKU N | order SKU N | orders | levels | rebuild | status]"
            );
            std::process::exit(2);
        }
    }
    Ok(())
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
