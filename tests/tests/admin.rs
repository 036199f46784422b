//! The admin CLI (`annals::admin`, feature `admin`), driven through its command line
//! against SQLite (a file per test) and PostgreSQL (a schema per test, feature `postgres`):
//! each subcommand's output and exit code, and verify failing on corrupted and unknown
//! stored events.
#![cfg(feature = "admin")]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use annals::admin::{Admin, AdminArgs, AdminStore};
use annals::store::{EventStore, NewEvent};
use annals::{CommitMeta, ExpectedVersion, Repository, StreamRef, Uuid};
use annals_examples::bank::{Account, Deposit, OpenAccount};
use annals_examples::shop::{AddStock, ConfirmOrder, Inventory, Order, OrderPlaced, PlaceOrder};
use annals_tests::TempDir;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Running the CLI

struct Run {
    code: ExitCode,
    out: String,
    err: String,
}

impl Run {
    fn json(&self) -> Vec<Value> {
        self.out
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"))
            })
            .collect()
    }

    #[track_caller]
    fn expect(&self, code: u8) -> &Self {
        assert_eq!(
            self.code,
            ExitCode::from(code),
            "exit code; out:\n{}\nerr:\n{}",
            self.out,
            self.err
        );
        self
    }
}

async fn run<S: AdminStore>(admin: &Admin<S>, args: &[&str]) -> Run {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv = std::iter::once("app").chain(args.iter().copied());
    let code = admin.run_with(argv, &mut out, &mut err).await;
    Run {
        code,
        out: String::from_utf8(out).expect("output is UTF-8"),
        err: String::from_utf8(err).expect("errors are UTF-8"),
    }
}

// ---------------------------------------------------------------------------------------
// The stores, each with a projection whose read model lives in its database

/// A store the admin runs on, its registered projection and its read model.
trait Fixture: AdminStore + Sized {
    /// The admin with the shop's and the bank's aggregates and the projection.
    fn admin(&self) -> Admin<Self>;
    /// The projection's name.
    fn projection(&self) -> &'static str;
    /// The order ids in the read model, sorted.
    async fn read_model(&self) -> Vec<String>;
    /// Runs `UPDATE annals_events SET {set} WHERE position = {position}` by hand.
    async fn corrupt(&self, set: &str, position: u64);
}

mod sqlite_fixture {
    use annals::admin::Admin;
    use annals::SqliteStore;
    use annals_examples::bank::Account;
    use annals_examples::shop::{self, Inventory, Order, ShopView};

    impl super::Fixture for SqliteStore {
        fn admin(&self) -> Admin<Self> {
            Admin::new(self.clone())
                .aggregate::<Order>()
                .aggregate::<Inventory>()
                .aggregate::<Account>()
                .projection(|| ShopView)
        }

        fn projection(&self) -> &'static str {
            "shop_view"
        }

        async fn read_model(&self) -> Vec<String> {
            let mut ids: Vec<String> = shop::list_orders(self)
                .await
                .expect("reading the orders")
                .into_iter()
                .map(|row| row.id)
                .collect();
            ids.sort();
            ids
        }

        async fn corrupt(&self, set: &str, position: u64) {
            let sql = format!("UPDATE annals_events SET {set} WHERE position = {position}");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(self.pool())
                .await
                .expect("corrupting a row");
        }
    }
}

async fn sqlite() -> (annals::SqliteStore, TempDir) {
    let dir = TempDir::new().expect("a temporary directory");
    let store = annals::SqliteStore::open(dir.path().join("events.db"))
        .await
        .expect("opening SQLite");
    annals_examples::shop::create_view(&store)
        .await
        .expect("creating the shop's tables");
    (store, dir)
}

#[cfg(feature = "postgres")]
mod pg_fixture {
    use annals::admin::Admin;
    use annals::{projection, EventMeta, PgStore, PgTx};
    use annals_examples::bank::Account;
    use annals_examples::shop::{Inventory, Order, OrderPlaced};

    /// Placed orders, in a table of the store's schema.
    pub struct PgOrders {
        pub table: String,
    }

    #[projection(name = "admin_orders")]
    impl PgOrders {
        #[on]
        async fn placed(
            &mut self,
            e: &OrderPlaced,
            m: &EventMeta,
            tx: &mut PgTx,
        ) -> Result<(), sqlx::Error> {
            let sql = format!("INSERT INTO {} (id, sku) VALUES ($1, $2)", self.table);
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&m.stream_id)
                .bind(&e.sku)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        #[reset]
        async fn truncate(&mut self, tx: &mut PgTx) -> Result<(), sqlx::Error> {
            let sql = format!("DELETE FROM {}", self.table);
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut **tx)
                .await?;
            Ok(())
        }
    }

    pub fn table(store: &PgStore) -> String {
        format!("\"{}\".admin_orders", store.schema())
    }

    impl super::Fixture for PgStore {
        fn admin(&self) -> Admin<Self> {
            let table = table(self);
            Admin::new(self.clone())
                .aggregate::<Order>()
                .aggregate::<Inventory>()
                .aggregate::<Account>()
                .projection(move || PgOrders {
                    table: table.clone(),
                })
        }

        fn projection(&self) -> &'static str {
            "admin_orders"
        }

        async fn read_model(&self) -> Vec<String> {
            let sql = format!("SELECT id FROM {} ORDER BY id", table(self));
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(self.pool())
                .await
                .expect("reading the orders")
        }

        async fn corrupt(&self, set: &str, position: u64) {
            let sql = format!(
                "UPDATE \"{}\".annals_events SET {set} WHERE position = {position}",
                self.schema()
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(self.pool())
                .await
                .expect("corrupting a row");
        }
    }
}

/// A store in a new schema (dropped by [`drop_pg`]), with the projection's table.
#[cfg(feature = "postgres")]
async fn postgres() -> annals::PgStore {
    let schema = format!("admin_{}", Uuid::new_v4().simple());
    let store = annals::PgStore::options()
        .schema(schema)
        .max_connections(4)
        .open(&annals_tests::database_url())
        .await
        .expect("connecting to PostgreSQL");
    let sql = format!(
        "CREATE TABLE {} (id text PRIMARY KEY, sku text NOT NULL)",
        pg_fixture::table(&store)
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(store.pool())
        .await
        .expect("creating the read model's table");
    store
}

#[cfg(feature = "postgres")]
async fn drop_pg(store: annals::PgStore) {
    let schema = store.schema().to_owned();
    store.pool().close().await;
    annals_tests::drop_schema(&annals_tests::database_url(), &schema)
        .await
        .expect("dropping the test's schema");
}

// ---------------------------------------------------------------------------------------
// The data: three orders (one confirmed, with ids, correlation and a header), stock, and
// a bank account with a deposit stored at schema version 1

struct Seeded {
    command_id: Uuid,
    correlation_id: Uuid,
    /// Position of o-1's `OrderPlaced`.
    placed_o1: u64,
    /// Position of o-2's `OrderPlaced`.
    placed_o2: u64,
    /// Position of the version-1 deposit.
    old_deposit: u64,
    head: u64,
}

async fn seed<S: EventStore>(store: &S) -> Seeded {
    let orders = Repository::<Order, _>::new(store.clone());
    let inventory = Repository::<Inventory, _>::new(store.clone());
    let accounts = Repository::<Account, _>::new(store.clone());
    inventory
        .execute(AddStock {
            sku: "tea".into(),
            quantity: 10,
        })
        .await
        .expect("adding stock");
    let (command_id, correlation_id) = (Uuid::new_v4(), Uuid::new_v4());
    let meta = CommitMeta::new()
        .command_id(command_id)
        .correlation_id(correlation_id)
        .causation_id(correlation_id)
        .header("tenant", "acme");
    let place = |order: &str, quantity| PlaceOrder {
        order: order.into(),
        sku: "tea".into(),
        quantity,
    };
    let placed_o1 = orders
        .execute_with(place("o-1", 2), meta)
        .await
        .expect("placing o-1")
        .position;
    let placed_o2 = orders
        .execute(place("o-2", 1))
        .await
        .expect("placing o-2")
        .position;
    orders.execute(place("o-3", 5)).await.expect("placing o-3");
    orders
        .execute(ConfirmOrder {
            order: "o-1".into(),
        })
        .await
        .expect("confirming o-1");
    accounts
        .execute(OpenAccount {
            account: "ada".into(),
            owner: "Ada".into(),
        })
        .await
        .expect("opening the account");
    accounts
        .execute(Deposit {
            account: "ada".into(),
            amount: 100,
        })
        .await
        .expect("depositing");
    // A deposit as the first schema wrote it: no memo.
    let old = store
        .append(
            StreamRef::new("Account", "ada"),
            ExpectedVersion::Exact(2),
            vec![NewEvent::new("MoneyDeposited", 1, r#"{"amount":7}"#.into())],
            &CommitMeta::new(),
        )
        .await
        .expect("appending a version-1 deposit");
    Seeded {
        command_id,
        correlation_id,
        placed_o1,
        placed_o2,
        old_deposit: old.last_position,
        head: old.last_position,
    }
}

// ---------------------------------------------------------------------------------------
// The scenarios, each run on both stores

async fn streams_list<F: Fixture>(store: &F) {
    let admin = store.admin();
    let run0 = run(&admin, &["streams", "list"]).await;
    run0.expect(0);
    assert!(run0.out.contains("no streams"), "{}", run0.out);
    seed(store).await;

    let all = run(&admin, &["streams", "list", "--json"]).await;
    all.expect(0);
    let listed: Vec<(String, String, u64, u64)> = all
        .json()
        .iter()
        .map(|s| {
            assert!(s["updated_at"].as_str().is_some_and(|t| t.ends_with('Z')));
            (
                s["stream_type"].as_str().unwrap().to_owned(),
                s["stream_id"].as_str().unwrap().to_owned(),
                s["version"].as_u64().unwrap(),
                s["events"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("Account", "ada", 3),
        ("Inventory", "tea", 1),
        ("Order", "o-1", 2),
        ("Order", "o-2", 1),
        ("Order", "o-3", 1),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(t, id, v)| ((*t).to_owned(), (*id).to_owned(), *v, *v))
        .collect();
    assert_eq!(listed, expected);

    let text = run(&admin, &["streams", "list"]).await;
    text.expect(0);
    let lines: Vec<&str> = text.out.lines().collect();
    assert_eq!(lines.len(), 6, "a header and five streams:\n{}", text.out);
    assert!(lines[0].starts_with("TYPE"), "{}", text.out);
    let cells: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(&cells[..4], ["Order", "o-1", "2", "2"], "{}", text.out);

    // A page of two orders, then the next page from the printed cursor.
    let page = run(
        &admin,
        &["streams", "list", "--type", "Order", "--limit", "2"],
    )
    .await;
    page.expect(0);
    assert!(page.out.contains("o-1") && page.out.contains("o-2"));
    assert!(!page.out.contains("o-3"));
    let next = page
        .out
        .lines()
        .find_map(|l| l.strip_prefix("next page: --after "))
        .unwrap_or_else(|| panic!("no next-page cursor:\n{}", page.out));
    assert_eq!(next, "Order/o-2");
    let rest = run(
        &admin,
        &[
            "streams", "list", "--type", "Order", "--after", next, "--json",
        ],
    )
    .await;
    rest.expect(0);
    let ids: Vec<Value> = rest.json().iter().map(|s| s["stream_id"].clone()).collect();
    assert_eq!(ids, ["o-3"]);

    let none = run(&admin, &["streams", "list", "--type", "Refund"]).await;
    none.expect(0);
    assert!(none.out.contains("no streams"));

    let bad = run(&admin, &["streams", "list", "--after", "no-slash"]).await;
    bad.expect(2);
    assert!(bad.err.contains("expected TYPE/ID"), "{}", bad.err);
    assert!(bad.out.is_empty());
}

async fn streams_show<F: Fixture>(store: &F) {
    let admin = store.admin();
    let seeded = seed(store).await;

    let shown = run(&admin, &["streams", "show", "Order", "o-1", "--json"]).await;
    shown.expect(0);
    let events = shown.json();
    assert_eq!(events.len(), 2);
    let placed = &events[0];
    assert_eq!(placed["stream_type"], "Order");
    assert_eq!(placed["stream_id"], "o-1");
    assert_eq!(placed["version"], 1);
    assert_eq!(placed["position"], seeded.placed_o1);
    assert_eq!(placed["command_id"], seeded.command_id.to_string());
    assert_eq!(placed["correlation_id"], seeded.correlation_id.to_string());
    assert_eq!(placed["causation_id"], seeded.correlation_id.to_string());
    assert_eq!(placed["headers"], json!({ "tenant": "acme" }));
    assert!(Uuid::parse_str(placed["event_id"].as_str().unwrap()).is_ok());
    assert!(placed["recorded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(placed["stored_type"], "OrderPlaced");
    assert_eq!(placed["stored_version"], 1);
    assert_eq!(placed["decoded"]["event_type"], "OrderPlaced");
    assert_eq!(
        placed["decoded"]["data"],
        json!({ "sku": "tea", "quantity": 2 })
    );
    assert_eq!(placed["error"], Value::Null);
    assert_eq!(events[1]["stored_type"], "OrderConfirmed");
    assert_eq!(events[1]["version"], 2);

    let text = run(&admin, &["streams", "show", "Order", "o-1"]).await;
    text.expect(0);
    for expected in [
        "stream Order/o-1: version 2, showing 2 events".to_owned(),
        format!("version 1  position {}  OrderPlaced v1", seeded.placed_o1),
        format!("command id      {}", seeded.command_id),
        format!("correlation id  {}", seeded.correlation_id),
        format!("causation id    {}", seeded.correlation_id),
        "header tenant   acme".to_owned(),
        r#"data            {"quantity":2,"sku":"tea"}"#.to_owned(),
    ] {
        assert!(
            text.out.contains(&expected),
            "no `{expected}` in:\n{}",
            text.out
        );
    }
    assert!(!text.out.contains("stored data"), "--raw not asked for");

    // The version-1 deposit, upcast by the current code: stored and read versions differ.
    let account = run(
        &admin,
        &["streams", "show", "Account", "ada", "--from", "3"],
    )
    .await;
    account.expect(0);
    assert!(
        account.out.contains(&format!(
            "version 3  position {}  MoneyDeposited v1",
            seeded.old_deposit
        )),
        "{}",
        account.out
    );
    assert!(account.out.contains("read as         MoneyDeposited v2"));
    assert!(account
        .out
        .contains(r#"data            {"amount":7,"memo":""}"#));
    let raw = run(
        &admin,
        &[
            "streams", "show", "Account", "ada", "--from", "3", "--raw", "--json",
        ],
    )
    .await;
    let deposit = &raw.json()[0];
    assert_eq!(deposit["stored_version"], 1);
    assert_eq!(deposit["stored_payload"], r#"{"amount":7}"#);
    assert_eq!(deposit["decoded"]["event_version"], 2);
    assert_eq!(
        deposit["decoded"]["data"],
        json!({ "amount": 7, "memo": "" })
    );

    let one = run(
        &admin,
        &[
            "streams", "show", "Account", "ada", "--limit", "1", "--json",
        ],
    )
    .await;
    let one = one.json();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["stored_type"], "AccountOpened");

    let missing = run(&admin, &["streams", "show", "Order", "o-404"]).await;
    missing.expect(3);
    assert!(
        missing.err.contains("stream Order/o-404 does not exist"),
        "{}",
        missing.err
    );

    // An undecodable event is shown as stored, with why, and the exit code says so.
    store
        .corrupt("payload = '{\"sku\": 5}'", seeded.placed_o2)
        .await;
    let broken = run(&admin, &["streams", "show", "Order", "o-2"]).await;
    broken.expect(1);
    assert!(broken.out.contains("malformed payload"), "{}", broken.out);
    assert!(
        broken.out.contains(r#"stored data     {"sku": 5}"#),
        "{}",
        broken.out
    );
}

async fn projections<F: Fixture>(store: &F) {
    let admin = store.admin();
    let name = store.projection();
    let seeded = seed(store).await;
    let head = seeded.head;

    let status = run(&admin, &["projections", "status", "--json"]).await;
    status.expect(0);
    assert_eq!(
        status.json(),
        [json!({ "projection": name, "position": 0, "head": head, "lag": head })]
    );

    // Rebuild while the projection's runner holds the lease elsewhere: refused, untouched.
    let lease = store
        .try_lease(name)
        .await
        .unwrap()
        .expect("the lease is free");
    let impatient = store.admin().lease_wait(Duration::from_millis(300));
    let busy = run(&impatient, &["projections", "rebuild", name]).await;
    busy.expect(3);
    assert!(busy.err.contains("its lease is held"), "{}", busy.err);
    let busy = run(&impatient, &["projections", "reset", name]).await;
    busy.expect(3);
    assert!(store.read_model().await.is_empty());
    // Let go while the admin waits for it: the rebuild goes ahead.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(lease);
    });

    let rebuilt = run(
        &admin,
        &["projections", "rebuild", name, "--batch-size", "2"],
    )
    .await;
    rebuilt.expect(0);
    release.await.unwrap();
    assert!(
        rebuilt
            .out
            .contains(&format!("checkpoint at position {head}")),
        "{}",
        rebuilt.out
    );
    assert!(rebuilt.out.starts_with(&format!("rebuilt `{name}`: ")));
    assert_eq!(store.read_model().await, ["o-1", "o-2", "o-3"]);

    let status = run(&admin, &["projections", "status", name]).await;
    status.expect(0);
    let row: Vec<&str> = status
        .out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row, [name, &head.to_string(), &head.to_string(), "0"]);

    // A second rebuild replays into the emptied read model: the same rows, once each.
    run(&admin, &["projections", "rebuild", name])
        .await
        .expect(0);
    assert_eq!(store.read_model().await, ["o-1", "o-2", "o-3"]);

    let reset = run(&admin, &["projections", "reset", name, "--json"]).await;
    reset.expect(0);
    assert_eq!(
        reset.json(),
        [json!({ "projection": name, "reset_from": head })]
    );
    assert!(store.read_model().await.is_empty());
    let status = run(&admin, &["projections", "status", "--json"]).await;
    assert_eq!(status.json()[0]["position"], 0);

    let unknown = run(&admin, &["projections", "rebuild", "nope"]).await;
    unknown.expect(3);
    assert!(
        unknown.err.contains(&format!(
            "no projection `nope` is registered (registered: {name})"
        )),
        "{}",
        unknown.err
    );
    run(&admin, &["projections", "status", "nope"])
        .await
        .expect(3);
    run(&admin, &["projections", "reset"]).await.expect(2);
}

async fn verify<F: Fixture>(store: &F) {
    let admin = store.admin();
    let seeded = seed(store).await;

    let clean = run(&admin, &["verify", "--batch-size", "3"]).await;
    clean.expect(0);
    assert_eq!(
        clean.out.trim(),
        format!("{} events checked: all decode", seeded.head)
    );

    // A type no registered enum knows, in a stream no registered aggregate owns.
    let legacy = NewEvent::new("LegacyNote", 1, "{}".into());
    let appended = store
        .append(
            StreamRef::new("Legacy", "l-1"),
            ExpectedVersion::Any,
            vec![legacy],
            &CommitMeta::new(),
        )
        .await
        .unwrap();
    let unknown = run(&admin, &["verify"]).await;
    unknown.expect(1);
    assert!(
        unknown.out.contains(&format!(
            "unknown event type `LegacyNote`: 1 event in streams of type Legacy, first at position {}",
            appended.last_position
        )),
        "{}",
        unknown.out
    );
    let allowed = run(&admin, &["verify", "--allow-unknown-types"]).await;
    allowed.expect(0);
    assert!(allowed.out.contains("unknown event type `LegacyNote`"));

    // A payload the current type cannot read, a schema version no upcaster covers, a type
    // the stream's aggregate does not know, and a row whose metadata cannot be read.
    store
        .corrupt("payload = '{\"sku\": 5}'", seeded.placed_o2)
        .await;
    store.corrupt("event_version = 9", seeded.placed_o1).await;
    let mystery = store
        .append(
            StreamRef::new("Order", "o-3"),
            ExpectedVersion::Exact(1),
            vec![NewEvent::new("OrderShipped", 1, "{}".into())],
            &CommitMeta::new(),
        )
        .await
        .unwrap();
    store.corrupt("headers = '[1]'", seeded.old_deposit).await;

    let failing = run(
        &admin,
        &["verify", "--allow-unknown-types", "--batch-size", "4"],
    )
    .await;
    failing.expect(1);
    let out = &failing.out;
    for expected in [
        format!(
            "position {}: Order/o-1 version 1, `OrderPlaced` v9: `annals_examples::shop::OrderEvent` cannot decode it: unknown version 9 (current version is 1)",
            seeded.placed_o1
        ),
        format!(
            "position {}: Order/o-2 version 1, `OrderPlaced` v1: `annals_examples::shop::OrderEvent` cannot decode it: malformed payload:",
            seeded.placed_o2
        ),
        format!(
            "corrupt record at position {}: headers",
            seeded.old_deposit
        ),
        format!(
            "position {}: Order/o-3 version 2, `OrderShipped` v1: event type `OrderShipped` is not an event of `annals_examples::shop::OrderEvent`, the events of stream type `Order`",
            mystery.last_position
        ),
    ] {
        assert!(out.contains(&expected), "no `{expected}` in:\n{out}");
    }
    let checked = seeded.head + 2 - 1; // two appended, one row unreadable
    assert!(
        out.contains(&format!(
            "{checked} events checked: 4 do not decode, 1 unknown event type"
        )),
        "{out}"
    );

    // The same as JSON lines, one per failure, then the unknown type and a summary.
    let json_run = run(&admin, &["verify", "--json"]).await;
    json_run.expect(1);
    let lines = json_run.json();
    let failures: BTreeMap<u64, &Value> = lines
        .iter()
        .filter(|l| l.get("error").is_some())
        .map(|l| (l["position"].as_u64().unwrap(), l))
        .collect();
    assert_eq!(failures.keys().copied().collect::<Vec<_>>(), {
        let mut positions = vec![
            seeded.placed_o1,
            seeded.placed_o2,
            seeded.old_deposit,
            mystery.last_position,
        ];
        positions.sort();
        positions
    });
    let o1 = failures[&seeded.placed_o1];
    assert_eq!(o1["stream_type"], "Order");
    assert_eq!(o1["stream_id"], "o-1");
    assert_eq!(o1["version"], 1);
    assert_eq!(o1["event_type"], "OrderPlaced");
    assert_eq!(o1["event_version"], 9);
    assert_eq!(failures[&seeded.old_deposit]["stream_type"], Value::Null);
    assert!(lines.contains(&json!({
        "unknown_type": "LegacyNote",
        "events": 1,
        "first_position": appended.last_position,
        "stream_types": ["Legacy"],
    })));
    assert_eq!(
        lines.last().unwrap(),
        &json!({ "checked": checked, "failed": 4, "unknown_types": 1 })
    );

    // Listing is capped, counting goes on.
    let capped = run(&admin, &["verify", "--max-listed", "1"]).await;
    capped.expect(1);
    assert!(
        capped.out.contains("... and 3 more that do not decode"),
        "{}",
        capped.out
    );
}

/// The admin inside an application's own clap command line.
async fn embedded<F: Fixture>(store: &F) {
    use clap::{Parser, Subcommand};

    #[derive(Parser)]
    struct AppCli {
        #[command(subcommand)]
        command: AppCommand,
    }

    #[derive(Subcommand)]
    enum AppCommand {
        /// Serve the application.
        Serve,
        /// The event store's admin commands.
        Admin(AdminArgs),
    }

    let seeded = seed(store).await;
    let cli = AppCli::try_parse_from(["app", "admin", "--json", "projections", "status"])
        .expect("the command line parses");
    let AppCommand::Admin(args) = cli.command else {
        panic!("parsed as another command")
    };
    let mut out = Vec::new();
    let code = store.admin().execute(&args, &mut out).await.expect("runs");
    assert_eq!(code, ExitCode::SUCCESS);
    let status: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(status["lag"], seeded.head);
    assert!(AppCli::try_parse_from(["app", "serve"]).is_ok());

    // Errors come back as values to report as the application does.
    let cli = AppCli::try_parse_from(["app", "admin", "projections", "reset", "nope"]).unwrap();
    let AppCommand::Admin(args) = cli.command else {
        panic!("parsed as another command")
    };
    let error = store
        .admin()
        .execute(&args, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        annals::admin::AdminError::UnknownProjection { .. }
    ));
}

#[tokio::test]
async fn two_projections_of_one_name_are_refused() {
    let (store, _dir) = sqlite().await;
    let admin = Admin::new(store)
        .projection(|| annals_examples::shop::ShopView)
        .projection(|| annals_examples::shop::ShopView);
    for args in [
        &["projections", "status"][..],
        &["projections", "rebuild", "shop_view"],
    ] {
        let refused = run(&admin, args).await;
        refused.expect(3);
        assert!(
            refused
                .err
                .contains("error: projection `shop_view` is registered twice"),
            "{}",
            refused.err
        );
    }
}

#[tokio::test]
async fn help_goes_to_the_output_with_exit_code_0() {
    let (store, _dir) = sqlite().await;
    let admin = store.admin();
    let help = run(&admin, &["--help"]).await;
    help.expect(0);
    for command in ["streams", "projections", "verify"] {
        assert!(help.out.contains(command), "{}", help.out);
    }
    let help = run(&admin, &["projections", "rebuild", "--help"]).await;
    help.expect(0);
    assert!(help.out.contains("--batch-size"), "{}", help.out);
    let missing = run(&admin, &[]).await;
    missing.expect(2);
    assert!(missing.out.is_empty() && !missing.err.is_empty());
}

/// Fails on orders of 5 always, and on orders of 1 while `flaky` is set.
struct Picky {
    flaky: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("order of {0} refused")]
struct Refused(u32);

#[annals::projection(name = "picky")]
impl Picky {
    #[on]
    fn placed(&mut self, e: &OrderPlaced) -> Result<(), Refused> {
        if e.quantity == 5 || (e.quantity == 1 && self.flaky.load(Ordering::SeqCst)) {
            return Err(Refused(e.quantity));
        }
        Ok(())
    }
}

/// `parked list | retry | skip`: a runner parks o-2's and o-3's `OrderPlaced`; retrying
/// o-3's fails again (still parked, one more attempt), o-2's goes through once its cause is
/// gone, o-3's is skipped; unknown and resolved ids are errors.
async fn parked<F: Fixture>(store: &F) {
    let flaky = Arc::new(AtomicBool::new(true));
    let make = {
        let flaky = Arc::clone(&flaky);
        move || Picky {
            flaky: Arc::clone(&flaky),
        }
    };
    let admin = store.admin().projection(make.clone());
    let none = run(&admin, &["parked", "list"]).await;
    none.expect(0);
    assert_eq!(none.out.trim(), "no parked events");
    let seeded = seed(store).await;
    let mut runner = annals::ProjectionRunner::new(store.clone(), make())
        .park_after(2)
        .retry_backoff(annals::Backoff::none());
    runner
        .catch_up()
        .await
        .expect("the runner parks and goes on");

    let listed = run(&admin, &["parked", "list", "--json"]).await;
    listed.expect(0);
    let listed = listed.json();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["position"], seeded.placed_o2);
    assert_eq!(listed[0]["stream_id"], "o-2");
    assert_eq!(listed[1]["stream_id"], "o-3");
    for entry in &listed {
        assert_eq!(entry["runner"], "picky");
        assert_eq!(entry["event_type"], "OrderPlaced");
        assert_eq!(entry["attempts"], 2);
        assert_eq!(entry["resolution"], Value::Null);
    }
    assert!(listed[1]["error"]
        .as_str()
        .unwrap()
        .contains("order of 5 refused"));
    let (o2, o3) = (
        listed[0]["id"].as_u64().unwrap(),
        listed[1]["id"].as_u64().unwrap(),
    );

    let text = run(&admin, &["parked", "list", "--runner", "picky"]).await;
    text.expect(0);
    let header: Vec<&str> = text
        .out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "RUNNER", "POSITION", "EVENT", "STREAM", "ATTEMPTS", "PARKED", "STATUS"]
    );
    assert!(text.out.contains("Order/o-3"), "{}", text.out);
    assert!(
        text.out
            .contains(&format!("{o3}: projection `picky` failed")),
        "{}",
        text.out
    );
    let other = run(&admin, &["parked", "list", "--runner", "shop_view"]).await;
    assert_eq!(other.out.trim(), "no parked events");

    // o-3 still fails: exit 3 with the handler's error, still parked, one more attempt.
    let again = run(&admin, &["parked", "retry", &o3.to_string()]).await;
    again.expect(3);
    assert!(again.err.contains("order of 5 refused"), "{}", again.err);
    let still = run(&admin, &["parked", "list", "--json"]).await.json();
    assert_eq!(still.len(), 2);
    assert_eq!(still[1]["attempts"], 3);

    // o-2's cause is gone: retried, out of the parking.
    flaky.store(false, Ordering::SeqCst);
    let retried = run(&admin, &["parked", "retry", &o2.to_string()]).await;
    retried.expect(0);
    assert_eq!(
        retried.out.trim(),
        format!(
            "retried parked event {o2} (runner `picky`, position {}, `OrderPlaced` in Order/o-2): \
             handled, no longer parked",
            seeded.placed_o2
        )
    );
    let skipped = run(&admin, &["parked", "skip", &o3.to_string(), "--json"]).await;
    skipped.expect(0);
    assert_eq!(
        skipped.json(),
        [json!({ "id": o3, "runner": "picky", "resolution": "skipped" })]
    );
    let empty = run(&admin, &["parked", "list"]).await;
    assert_eq!(empty.out.trim(), "no parked events");
    let all = run(&admin, &["parked", "list", "--all", "--json"])
        .await
        .json();
    let resolutions: Vec<&Value> = all.iter().map(|e| &e["resolution"]).collect();
    assert_eq!(resolutions, [&json!("retried"), &json!("skipped")]);

    for args in [
        ["parked", "skip", &o3.to_string()],
        ["parked", "retry", "999"],
    ] {
        let refused = run(&admin, &args).await;
        refused.expect(3);
        assert!(refused.err.contains("no parked event"), "{}", refused.err);
    }
    run(&admin, &["parked", "retry"]).await.expect(2);
}

/// `processes status | show | deadlines`: the shop's payment process manager after it saw
/// o-1 confirmed (state saved, a deadline pending), then after o-1 was paid (ended, the
/// deadline cancelled); unknown names and keys are errors.
async fn processes<F: Fixture>(store: &F) {
    use annals::workflow::{Dispatcher, Processes};
    use annals_examples::shop::{OrderPayment, PayOrder};

    let admin = store.admin().process::<OrderPayment>();
    assert_eq!(admin.process_names(), ["order_payment"]);
    let none = run(&admin, &["processes", "deadlines"]).await;
    none.expect(0);
    assert_eq!(none.out.trim(), "no pending deadlines");
    let unregistered = store.admin();
    let empty = run(&unregistered, &["processes", "status"]).await;
    empty.expect(0);
    assert_eq!(empty.out.trim(), "no process managers registered");

    let seeded = seed(store).await;
    let dispatcher = Dispatcher::new().route(Repository::<Order, _>::new(store.clone()));
    let mut payments = annals::Runner::new(
        store.clone(),
        Processes::<OrderPayment, _>::new(store.clone(), dispatcher).expect("routes"),
    );
    payments
        .catch_up()
        .await
        .expect("the process sees o-1 confirmed");

    // Status: the checkpoint and lag, one deadline (due 2 s after o-1 was confirmed).
    let status = run(&admin, &["processes", "status", "--json"]).await;
    status.expect(0);
    let status = status.json();
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(status[0]["process"], "order_payment");
    assert_eq!(status[0]["head"], seeded.head);
    let position = status[0]["position"].as_u64().expect("a position");
    assert!(position > seeded.placed_o1, "{status:?}");
    assert_eq!(status[0]["lag"], seeded.head - position);
    assert_eq!(status[0]["deadlines"], 1);
    let due = admin
        .process_status(None, annals::OffsetDateTime::now_utc())
        .await
        .expect("status")[0]
        .next_due
        .expect("a deadline is pending");
    let early = admin
        .process_status(None, due - Duration::from_millis(1))
        .await
        .expect("status just before it is due");
    assert_eq!((early[0].deadlines, early[0].overdue), (1, 0));
    let late = admin
        .process_status(Some("order_payment"), due)
        .await
        .expect("status when it is due");
    assert_eq!(late[0].overdue, 1);
    let text = run(&admin, &["processes", "status"]).await;
    text.expect(0);
    let header: Vec<&str> = text
        .out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "PROCESS",
            "POSITION",
            "HEAD",
            "LAG",
            "DEADLINES",
            "OVERDUE",
            "NEXT",
            "DUE"
        ]
    );

    // One key's state and deadline.
    let shown = run(
        &admin,
        &["processes", "show", "order_payment", "o-1", "--json"],
    )
    .await;
    shown.expect(0);
    let shown = &shown.json()[0];
    assert_eq!(shown["key"], "o-1");
    assert_eq!(shown["state"]["state"], json!({ "order": "o-1" }));
    assert_eq!(shown["state"]["version"], 1);
    assert_eq!(shown["state"]["ended"], false);
    let deadlines = shown["deadlines"].as_array().expect("deadlines");
    assert_eq!(deadlines.len(), 1);
    assert_eq!(deadlines[0]["deadline"], "payment_due");
    let shown = run(&admin, &["processes", "show", "order_payment", "o-1"]).await;
    shown.expect(0);
    assert!(
        shown
            .out
            .starts_with("process order_payment, key o-1: version 1, running\n  state  {\"order\":\"o-1\"}\nPROCESS"),
        "{}",
        shown.out
    );

    // The deadline list, all and overdue ones.
    let listed = run(
        &admin,
        &["processes", "deadlines", "order_payment", "--json"],
    )
    .await;
    listed.expect(0);
    let listed = listed.json();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["key"], "o-1");
    let wait = (due - annals::OffsetDateTime::now_utc()).as_seconds_f64();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait + 0.05)).await;
    }
    let overdue = run(&admin, &["processes", "deadlines", "--overdue"]).await;
    overdue.expect(0);
    let lines: Vec<&str> = overdue.out.lines().collect();
    assert_eq!(lines.len(), 2, "{}", overdue.out);
    assert!(
        lines[1].starts_with("order_payment  o-1  payment_due"),
        "{}",
        overdue.out
    );
    assert!(lines[1].contains('s'), "{}", overdue.out);

    // Paid: the process ends and its deadline goes.
    Repository::<Order, _>::new(store.clone())
        .execute(PayOrder {
            order: "o-1".into(),
        })
        .await
        .expect("paying o-1");
    payments
        .catch_up()
        .await
        .expect("the process sees o-1 paid");
    let ended = run(&admin, &["processes", "show", "order_payment", "o-1"]).await;
    ended.expect(0);
    assert_eq!(
        ended.out,
        "process order_payment, key o-1: version 2, ended\n  state  {\"order\":\"o-1\"}\n\
         no pending deadlines\n"
    );
    let none = run(&admin, &["processes", "deadlines", "--overdue"]).await;
    assert_eq!(none.out.trim(), "no overdue deadlines");

    // Mistakes: exit 3 with the reason, or clap's usage error.
    let unknown = run(&admin, &["processes", "show", "order_payment", "o-2"]).await;
    unknown.expect(3);
    assert_eq!(
        unknown.err.trim(),
        "error: process manager `order_payment` has no state and no deadline for key `o-2`"
    );
    for args in [
        &["processes", "status", "billing"][..],
        &["processes", "deadlines", "billing"],
        &["processes", "show", "billing", "o-1"],
    ] {
        let refused = run(&admin, args).await;
        refused.expect(3);
        assert_eq!(
            refused.err.trim(),
            "error: no process manager `billing` is registered (registered: order_payment)"
        );
    }
    run(&admin, &["processes", "show", "order_payment"])
        .await
        .expect(2);
}

/// One test per scenario and store.
macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (store, _dir) = crate::sqlite().await;
                    crate::$scenario(&store).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let store = crate::postgres().await;
                    let outcome = tokio::spawn({
                        let store = store.clone();
                        async move { crate::$scenario(&store).await }
                    })
                    .await;
                    crate::drop_pg(store).await;
                    if let Err(error) = outcome {
                        std::panic::resume_unwind(error.into_panic());
                    }
                }
            )*
        }
    };
}

on_every_store!(
    streams_list,
    streams_show,
    projections,
    verify,
    embedded,
    parked,
    processes
);
