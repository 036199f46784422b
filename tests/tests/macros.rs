//! Behaviour of the derives and `#[aggregate]`, through the facade only: stored names,
//! versions, aliases and upcasts; decode errors; handlers (sync, async, services, every
//! output shape, every stream policy); the command enum; snapshots.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use annals::store::{EventStore, NewEvent, Snapshot, SnapshotStore, StreamRange};
use annals::testing::{given, given_with, Outcome};
use annals::{
    aggregate, Aggregate, Command, CommitMeta, DecodeError, Event, Events, ExecuteError,
    ExpectedVersion, Handle, IntoEvents, MemoryStore, Repository, StreamPolicy, StreamRef,
};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// The bank domain.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AccountId(String);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn id(s: &str) -> AccountId {
    AccountId(s.to_owned())
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
#[event(aliases = ["AccountCreated"])]
struct AccountOpened {
    owner: String,
}

/// Version 3. Version 1 had only `amount`; version 2 added `memo`; version 3 renamed
/// `amount` to `cents`.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
#[event(
    name = "MoneyDeposited",
    version = 3,
    upcast(from = 1, with = DepositedV1),
    upcast(from = 2, with = DepositedV2)
)]
struct Deposited {
    cents: u64,
    memo: String,
}

#[derive(Deserialize)]
struct DepositedV1 {
    amount: u64,
}

#[derive(Deserialize)]
struct DepositedV2 {
    amount: u64,
    memo: String,
}

impl From<DepositedV1> for DepositedV2 {
    fn from(v1: DepositedV1) -> Self {
        DepositedV2 {
            amount: v1.amount,
            memo: "(none)".to_owned(),
        }
    }
}

impl From<DepositedV2> for Deposited {
    fn from(v2: DepositedV2) -> Self {
        Deposited {
            cents: v2.amount,
            memo: v2.memo,
        }
    }
}

/// Version 2 by a raw-JSON upcaster: version 1 stored `{"sum": n}`.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
#[event(version = 2, upcast(from = 1, json = upcasters::withdrawn_v1))]
struct Withdrawn {
    cents: u64,
}

mod upcasters {
    pub fn withdrawn_v1(mut v1: serde_json::Value) -> serde_json::Value {
        let sum = v1
            .as_object_mut()
            .and_then(|o| o.remove("sum"))
            .unwrap_or_default();
        serde_json::json!({ "cents": sum })
    }
}

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
#[event(name = "AccountFrozen")]
struct Frozen;

/// Recorded for auditors; the aggregate ignores it.
#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Audited(String);

#[derive(Debug, Clone, PartialEq, Events)]
enum AccountEvent {
    Opened(AccountOpened),
    Deposited(Deposited),
    Withdrawn(Withdrawn),
    Frozen(Frozen),
    Audited(Audited),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum AccountError {
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    Insufficient { balance: u64, asked: u64 },
    #[error("account is frozen")]
    Frozen,
    #[error("amount must be positive")]
    Zero,
}

#[derive(Debug, Clone, PartialEq, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct Open {
    #[command(id)]
    account: AccountId,
    owner: String,
}

#[derive(Debug, Clone, PartialEq, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct Deposit {
    #[command(id)]
    account: AccountId,
    cents: u64,
}

#[derive(Debug, Clone, PartialEq, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct Withdraw {
    #[command(id)]
    account: AccountId,
    cents: u64,
}

/// Splits a deposit into several events (a `Vec` of the enum).
#[derive(Debug, Clone, PartialEq, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct DepositMany {
    #[command(id)]
    account: AccountId,
    amounts: Vec<u64>,
}

/// Freezes if not frozen yet (an `Option`), asynchronously.
#[derive(Debug, Clone, PartialEq, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct Freeze {
    #[command(id)]
    account: AccountId,
}

/// No change (`()`), on any stream.
#[derive(Debug, Clone, PartialEq, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct Ping(#[command(id)] AccountId);

/// Pays interest computed by the services (async, with services).
#[derive(Debug, Clone, PartialEq, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct PayInterest {
    #[command(id)]
    account: AccountId,
}

/// Opens or tops up (the enum itself as output, `any` policy).
#[derive(Debug, Clone, PartialEq, Command, Serialize, Deserialize)]
#[command(aggregate = Account)]
struct Audit {
    #[command(id)]
    account: AccountId,
    note: String,
}

#[derive(Debug, Default)]
struct Bank {
    rate_percent: u64,
    calls: AtomicU32,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance: u64,
    frozen: bool,
    applied: u64,
}

#[aggregate(
    id = AccountId,
    event = AccountEvent,
    error = AccountError,
    ignore(Audited),
    snapshot(every = 3, version = 1)
)]
impl Account {
    #[command(create)]
    fn open(&self, cmd: Open) -> Result<AccountOpened, AccountError> {
        Ok(AccountOpened { owner: cmd.owner })
    }

    #[command]
    fn deposit(&self, cmd: Deposit) -> Result<Deposited, AccountError> {
        if self.frozen {
            return Err(AccountError::Frozen);
        }
        if cmd.cents == 0 {
            return Err(AccountError::Zero);
        }
        Ok(Deposited {
            cents: cmd.cents,
            memo: String::new(),
        })
    }

    #[command(existing)]
    fn withdraw(&self, cmd: Withdraw) -> Result<Withdrawn, AccountError> {
        if cmd.cents > self.balance {
            return Err(AccountError::Insufficient {
                balance: self.balance,
                asked: cmd.cents,
            });
        }
        Ok(Withdrawn { cents: cmd.cents })
    }

    #[command]
    fn deposit_many(&self, cmd: DepositMany) -> Result<Vec<AccountEvent>, AccountError> {
        Ok(cmd
            .amounts
            .into_iter()
            .map(|cents| {
                Deposited {
                    cents,
                    memo: "split".to_owned(),
                }
                .into()
            })
            .collect())
    }

    #[command]
    async fn freeze(&self, _cmd: Freeze) -> Result<Option<Frozen>, AccountError> {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        Ok((!self.frozen).then_some(Frozen))
    }

    #[command(any)]
    fn ping(&self, _: Ping) -> Result<(), AccountError> {
        Ok(())
    }

    #[command]
    async fn pay_interest(
        &self,
        _cmd: PayInterest,
        bank: &Bank,
    ) -> Result<Vec<Deposited>, AccountError> {
        bank.calls.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        let interest = self.balance * bank.rate_percent / 100;
        Ok((interest > 0)
            .then(|| Deposited {
                cents: interest,
                memo: "interest".to_owned(),
            })
            .into_iter()
            .collect())
    }

    #[command(any)]
    fn audit(&self, cmd: Audit) -> Result<AccountEvent, AccountError> {
        Ok(AccountEvent::Audited(Audited(cmd.note)))
    }

    #[apply]
    fn opened(&mut self, e: &AccountOpened) {
        self.owner.clone_from(&e.owner);
        self.applied += 1;
    }

    #[apply]
    fn deposited(&mut self, e: &Deposited) {
        self.balance += e.cents;
        self.applied += 1;
    }

    #[apply]
    fn withdrawn(&mut self, e: &Withdrawn) {
        self.balance -= e.cents;
        self.applied += 1;
    }

    #[apply]
    fn frozen(&mut self, _: &Frozen) {
        self.frozen = true;
        self.applied += 1;
    }

    /// Not a handler: stays an ordinary method.
    fn is_rich(&self) -> bool {
        self.balance >= 1_000
    }
}

fn bank(rate_percent: u64) -> Repository<Account, MemoryStore> {
    Repository::with_services(
        MemoryStore::new(),
        Bank {
            rate_percent,
            calls: AtomicU32::new(0),
        },
    )
}

async fn plant(store: &MemoryStore, stream_id: &str, events: Vec<NewEvent>) {
    store
        .append(
            StreamRef::new(Account::NAME, stream_id),
            ExpectedVersion::Any,
            events,
            &CommitMeta::default(),
        )
        .await
        .unwrap();
}

fn raw(event_type: &str, version: u32, payload: &str) -> NewEvent {
    NewEvent::new(event_type, version, payload.to_owned())
}

// ---------------------------------------------------------------------------------------
// Names, versions, aliases.

#[test]
fn event_names_versions_and_aliases() {
    assert_eq!(AccountOpened::NAME, "AccountOpened");
    assert_eq!(AccountOpened::VERSION, 1);
    assert_eq!(AccountOpened::ALIASES, ["AccountCreated"]);
    assert_eq!(Deposited::NAME, "MoneyDeposited");
    assert_eq!(Deposited::VERSION, 3);
    assert!(Deposited::ALIASES.is_empty());
    assert_eq!(Withdrawn::VERSION, 2);
    assert_eq!(Frozen::NAME, "AccountFrozen");
    assert_eq!(
        AccountEvent::NAMES,
        [
            "AccountOpened",
            "MoneyDeposited",
            "Withdrawn",
            "AccountFrozen",
            "Audited"
        ]
    );
    assert_eq!(
        AccountEvent::accepted_names(),
        [
            "AccountOpened",
            "AccountCreated",
            "MoneyDeposited",
            "Withdrawn",
            "AccountFrozen",
            "Audited"
        ]
    );
    assert_eq!(Account::NAME, "Account");
}

#[test]
fn events_enum_encodes_with_type_and_version() {
    let event: AccountEvent = Deposited {
        cents: 5,
        memo: "x".into(),
    }
    .into();
    assert_eq!(event.event_type(), "MoneyDeposited");
    assert_eq!(event.event_version(), 3);
    assert_eq!(event.encode().unwrap(), r#"{"cents":5,"memo":"x"}"#);
    let unit: AccountEvent = Frozen.into();
    assert_eq!(
        (unit.event_type(), unit.encode().unwrap().as_str()),
        ("AccountFrozen", "null")
    );
    let back = AccountEvent::decode("MoneyDeposited", 3, r#"{"cents":5,"memo":"x"}"#).unwrap();
    assert_eq!(back, event);
    assert_eq!(
        IntoEvents::<AccountEvent>::into_events(Frozen),
        vec![AccountEvent::Frozen(Frozen)]
    );
}

#[test]
fn event_decode_runs_the_chains_directly() {
    assert_eq!(
        Deposited::decode(1, r#"{"amount": 7}"#).unwrap(),
        Deposited {
            cents: 7,
            memo: "(none)".into()
        }
    );
    assert_eq!(
        Deposited::decode(2, r#"{"amount": 7, "memo": "m"}"#).unwrap(),
        Deposited {
            cents: 7,
            memo: "m".into()
        }
    );
    assert_eq!(
        Withdrawn::decode(1, r#"{"sum": 4}"#).unwrap(),
        Withdrawn { cents: 4 }
    );
    assert!(matches!(
        Withdrawn::decode(3, "{}"),
        Err(DecodeError::UnknownVersion {
            found: 3,
            current: 2
        })
    ));
    assert!(matches!(
        Withdrawn::decode(0, "{}"),
        Err(DecodeError::UnknownVersion {
            found: 0,
            current: 2
        })
    ));
    // The v1 JSON upcaster's output must still deserialize.
    assert!(matches!(
        Withdrawn::decode(1, r#"{"sum": "lots"}"#),
        Err(DecodeError::Payload(_))
    ));
    assert!(matches!(
        AccountEvent::decode("Nope", 1, "{}"),
        Err(DecodeError::UnknownType)
    ));
}

#[tokio::test]
async fn stored_old_versions_and_aliases_load() {
    let accounts = bank(0);
    plant(
        accounts.store(),
        "old",
        vec![
            raw("AccountCreated", 1, r#"{"owner": "ada"}"#),
            raw("MoneyDeposited", 1, r#"{"amount": 100}"#),
            raw("MoneyDeposited", 2, r#"{"amount": 20, "memo": "gift"}"#),
            raw("MoneyDeposited", 3, r#"{"cents": 3, "memo": ""}"#),
            raw("Withdrawn", 1, r#"{"sum": 23}"#),
            raw("Withdrawn", 2, r#"{"cents": 50}"#),
        ],
    )
    .await;
    let loaded = accounts.load(&id("old")).await.unwrap();
    assert_eq!(loaded.version, 6);
    assert_eq!(loaded.state.owner, "ada");
    assert_eq!(loaded.state.balance, 50);
    assert_eq!(loaded.state.applied, 6);
}

// ---------------------------------------------------------------------------------------
// Decode errors name the stream, version, type and position.

async fn decode_error(bad: NewEvent) -> annals::Error {
    let accounts = bank(0);
    // Another stream first, so the bad event's position differs from its version.
    plant(
        accounts.store(),
        "other",
        vec![raw("AccountOpened", 1, r#"{"owner": "x"}"#)],
    )
    .await;
    plant(
        accounts.store(),
        "bad",
        vec![raw("AccountOpened", 1, r#"{"owner": "bob"}"#), bad],
    )
    .await;
    accounts.load(&id("bad")).await.unwrap_err()
}

fn assert_decode_error(error: &annals::Error, event_type: &str, event_version: u32) {
    match error {
        annals::Error::Decode {
            stream_type,
            stream_id,
            version,
            position,
            event_type: stored_type,
            event_version: stored_version,
            ..
        } => {
            assert_eq!(stream_type, "Account");
            assert_eq!(stream_id, "bad");
            assert_eq!(*version, 2);
            assert_eq!(*position, 3);
            assert_eq!(stored_type, event_type);
            assert_eq!(*stored_version, event_version);
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    let message = error.to_string();
    for part in [
        event_type,
        "Account/bad",
        "version 2",
        "position 3",
        &format!("v{event_version}"),
    ] {
        assert!(
            message.contains(part),
            "`{message}` does not mention `{part}`"
        );
    }
}

#[tokio::test]
async fn unknown_event_type_is_a_decode_error() {
    let error = decode_error(raw("AccountRenamed", 1, "{}")).await;
    assert_decode_error(&error, "AccountRenamed", 1);
    assert!(matches!(
        error,
        annals::Error::Decode {
            reason: DecodeError::UnknownType,
            ..
        }
    ));
    assert!(error.to_string().contains("unknown event type"));
}

#[tokio::test]
async fn unknown_event_version_is_a_decode_error() {
    let error = decode_error(raw("MoneyDeposited", 9, r#"{"cents": 1, "memo": ""}"#)).await;
    assert_decode_error(&error, "MoneyDeposited", 9);
    assert!(matches!(
        error,
        annals::Error::Decode {
            reason: DecodeError::UnknownVersion {
                found: 9,
                current: 3
            },
            ..
        }
    ));
}

#[tokio::test]
async fn corrupt_payloads_are_decode_errors() {
    for (event_type, version, payload) in [
        ("MoneyDeposited", 3, r#"{"cents": "many"}"#),
        ("MoneyDeposited", 1, "not json"),
        ("Withdrawn", 1, "[1, 2]"),
        ("AccountCreated", 1, ""),
    ] {
        let error = decode_error(raw(event_type, version, payload)).await;
        assert_decode_error(&error, event_type, version);
        assert!(
            matches!(
                error,
                annals::Error::Decode {
                    reason: DecodeError::Payload(_),
                    ..
                }
            ),
            "{event_type} v{version} {payload:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn decode_errors_stop_command_execution() {
    let accounts = bank(0);
    plant(accounts.store(), "bad", vec![raw("AccountOpened", 1, "{}")]).await;
    let error = accounts
        .execute(Deposit {
            account: id("bad"),
            cents: 1,
        })
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        ExecuteError::Failed(annals::Error::Decode { .. })
    ));
    // Nothing was appended.
    let stored = accounts
        .store()
        .read_stream(StreamRef::new(Account::NAME, "bad"), StreamRange::ALL)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
}

// ---------------------------------------------------------------------------------------
// Handlers.

#[tokio::test]
async fn handlers_run_against_the_store() {
    let accounts = bank(0);
    let a = id("a");
    let opened = accounts
        .execute(Open {
            account: a.clone(),
            owner: "ada".into(),
        })
        .await
        .unwrap();
    assert_eq!(opened.version, 1);
    assert_eq!(
        opened.events,
        [AccountEvent::Opened(AccountOpened {
            owner: "ada".into()
        })]
    );
    accounts
        .execute(Deposit {
            account: a.clone(),
            cents: 1_500,
        })
        .await
        .unwrap();
    let withdrawn = accounts
        .execute(Withdraw {
            account: a.clone(),
            cents: 500,
        })
        .await
        .unwrap();
    assert_eq!(withdrawn.version, 3);
    let error = accounts
        .execute(Withdraw {
            account: a.clone(),
            cents: 5_000,
        })
        .await
        .unwrap_err();
    assert_eq!(
        error.rejected(),
        Some(&AccountError::Insufficient {
            balance: 1_000,
            asked: 5_000
        })
    );
    let loaded = accounts.load(&a).await.unwrap();
    assert_eq!((loaded.version, loaded.state.balance), (3, 1_000));
    assert!(loaded.state.is_rich());

    // Stored under the declared names and versions.
    let stored = accounts
        .store()
        .read_stream(StreamRef::new(Account::NAME, "a"), StreamRange::ALL)
        .await
        .unwrap();
    let kinds: Vec<_> = stored
        .iter()
        .map(|e| (e.meta.event_type.as_str(), e.meta.event_version))
        .collect();
    assert_eq!(
        kinds,
        [
            ("AccountOpened", 1),
            ("MoneyDeposited", 3),
            ("Withdrawn", 2)
        ]
    );
    assert_eq!(stored[2].payload, r#"{"cents":500}"#);
}

#[tokio::test]
async fn stream_policies() {
    let accounts = bank(0);
    let a = id("p");
    // existing (default and explicit) on a missing stream
    for error in [
        accounts
            .execute(Deposit {
                account: a.clone(),
                cents: 1,
            })
            .await
            .unwrap_err(),
        accounts
            .execute(Withdraw {
                account: a.clone(),
                cents: 0,
            })
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(&error, ExecuteError::Policy { exists: false, stream_id, .. } if stream_id == "p"),
            "{error:?}"
        );
    }
    // any on a missing stream: no change, nothing appended
    let pinged = accounts.execute(Ping(a.clone())).await.unwrap();
    assert_eq!((pinged.version, pinged.events.len()), (0, 0));
    // any on a missing stream creates it when it produces events
    let audited = accounts
        .execute(Audit {
            account: a.clone(),
            note: "kyc".into(),
        })
        .await
        .unwrap();
    assert_eq!(audited.version, 1);
    // create on an existing stream
    let error = accounts
        .execute(Open {
            account: a.clone(),
            owner: "x".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(error, ExecuteError::Policy { exists: true, .. }));
    assert_eq!(error.to_string(), "stream Account/p already exists");

    assert_eq!(
        <Account as Handle<Open>>::policy(&Open {
            account: a.clone(),
            owner: String::new()
        }),
        StreamPolicy::Create
    );
    assert_eq!(
        <Account as Handle<Ping>>::policy(&Ping(a.clone())),
        StreamPolicy::Any
    );
    assert_eq!(
        <Account as Handle<Freeze>>::policy(&Freeze { account: a }),
        StreamPolicy::Existing
    );
}

#[tokio::test]
async fn output_shapes_vec_option_unit_and_enum() {
    let accounts = bank(0);
    let a = id("shapes");
    accounts
        .execute(Open {
            account: a.clone(),
            owner: "o".into(),
        })
        .await
        .unwrap();
    // Vec<AccountEvent>
    let many = accounts
        .execute(DepositMany {
            account: a.clone(),
            amounts: vec![1, 2, 3],
        })
        .await
        .unwrap();
    assert_eq!((many.events.len(), many.version), (3, 4));
    let empty = accounts
        .execute(DepositMany {
            account: a.clone(),
            amounts: vec![],
        })
        .await
        .unwrap();
    assert_eq!((empty.events.len(), empty.version), (0, 4));
    // Option: Some, then None once frozen (async handler)
    let frozen = accounts
        .execute(Freeze { account: a.clone() })
        .await
        .unwrap();
    assert_eq!(frozen.events, [AccountEvent::Frozen(Frozen)]);
    let again = accounts
        .execute(Freeze { account: a.clone() })
        .await
        .unwrap();
    assert!(again.events.is_empty());
    // ()
    let pinged = accounts.execute(Ping(a.clone())).await.unwrap();
    assert!(pinged.events.is_empty());
    // The enum itself; an ignored event leaves the state alone.
    let audited = accounts
        .execute(Audit {
            account: a.clone(),
            note: "n".into(),
        })
        .await
        .unwrap();
    assert_eq!(audited.events, [AccountEvent::Audited(Audited("n".into()))]);
    let loaded = accounts.load(&a).await.unwrap();
    assert_eq!(loaded.version, 6);
    assert_eq!(loaded.state.balance, 6);
    assert!(loaded.state.frozen);
    assert_eq!(loaded.state.applied, 5, "the audit event is ignored");
}

#[tokio::test]
async fn async_handler_with_services() {
    let accounts = bank(10);
    let a = id("i");
    accounts
        .execute(Open {
            account: a.clone(),
            owner: "o".into(),
        })
        .await
        .unwrap();
    accounts
        .execute(Deposit {
            account: a.clone(),
            cents: 250,
        })
        .await
        .unwrap();
    let paid = accounts
        .execute(PayInterest { account: a.clone() })
        .await
        .unwrap();
    assert_eq!(
        paid.events,
        [AccountEvent::Deposited(Deposited {
            cents: 25,
            memo: "interest".into()
        })]
    );
    assert_eq!(accounts.services().calls.load(Ordering::SeqCst), 1);
    assert_eq!(accounts.load(&a).await.unwrap().state.balance, 275);

    // A repository without interest pays nothing.
    let stingy = bank(0);
    stingy
        .execute(Open {
            account: a.clone(),
            owner: "o".into(),
        })
        .await
        .unwrap();
    let paid = stingy.execute(PayInterest { account: a }).await.unwrap();
    assert!(paid.events.is_empty());
}

#[test]
fn fixture_given_when_then() {
    let opened = AccountOpened {
        owner: "ada".into(),
    };
    given::<Account>(opened.clone())
        .when(Deposit {
            account: id("f"),
            cents: 5,
        })
        .then_expect(Deposited {
            cents: 5,
            memo: String::new(),
        });
    given::<Account>(vec![
        AccountEvent::from(opened.clone()),
        AccountEvent::from(Frozen),
    ])
    .when(Deposit {
        account: id("f"),
        cents: 5,
    })
    .then_error(AccountError::Frozen);
    given::<Account>(())
        .when(Withdraw {
            account: id("f"),
            cents: 1,
        })
        .then_policy_refused();
    given::<Account>(opened.clone())
        .when(Open {
            account: id("f"),
            owner: "again".into(),
        })
        .then_policy_refused();
    given::<Account>(Some(opened))
        .when(Freeze { account: id("f") })
        .then_expect(Frozen);
    let bank = Bank {
        rate_percent: 50,
        calls: AtomicU32::new(0),
    };
    let outcome = given_with::<Account>(
        bank,
        vec![
            AccountEvent::from(AccountOpened { owner: "o".into() }),
            AccountEvent::from(Deposited {
                cents: 10,
                memo: String::new(),
            }),
        ],
    )
    .when(PayInterest { account: id("f") })
    .outcome();
    assert!(
        matches!(outcome, Outcome::Events(e) if e == [AccountEvent::Deposited(Deposited { cents: 5, memo: "interest".into() })])
    );
}

#[test]
fn command_ids() {
    let deposit = Deposit {
        account: id("c"),
        cents: 1,
    };
    assert_eq!(deposit.aggregate_id(), &id("c"));
    assert_eq!(Ping(id("t")).aggregate_id(), &id("t"));
}

// ---------------------------------------------------------------------------------------
// The command enum.

#[tokio::test]
async fn command_enum_from_json_then_executed() {
    let accounts = bank(0);
    let bodies = [
        r#"{"command": "Open", "account": "j", "owner": "json"}"#,
        r#"{"command": "Deposit", "account": "j", "cents": 40}"#,
        r#"{"command": "Withdraw", "account": "j", "cents": 15}"#,
        r#"{"command": "DepositMany", "account": "j", "amounts": [1, 1]}"#,
    ];
    for body in bodies {
        let command: AccountCommand = serde_json::from_str(body).unwrap();
        assert_eq!(command.aggregate_id(), &id("j"));
        accounts.execute(command).await.unwrap();
    }
    let loaded = accounts.load(&id("j")).await.unwrap();
    assert_eq!(
        (
            loaded.state.owner.as_str(),
            loaded.state.balance,
            loaded.version
        ),
        ("json", 27, 5)
    );

    // Policies and rejections go through the enum too.
    let again: AccountCommand =
        serde_json::from_str(r#"{"command": "Open", "account": "j", "owner": "x"}"#).unwrap();
    assert_eq!(
        <Account as Handle<AccountCommand>>::policy(&again),
        StreamPolicy::Create
    );
    assert!(matches!(
        accounts.execute(again).await,
        Err(ExecuteError::Policy { exists: true, .. })
    ));
    let too_much = AccountCommand::from(Withdraw {
        account: id("j"),
        cents: 1_000,
    });
    assert!(matches!(
        accounts.execute(too_much).await.unwrap_err().rejected(),
        Some(AccountError::Insufficient { .. })
    ));
}

#[test]
fn command_enum_serde_round_trip() {
    let commands = [
        AccountCommand::from(Deposit {
            account: id("r"),
            cents: 3,
        }),
        AccountCommand::from(Freeze { account: id("r") }),
        AccountCommand::from(Audit {
            account: id("r"),
            note: "n".into(),
        }),
    ];
    for command in commands {
        let json = serde_json::to_value(&command).unwrap();
        let back: AccountCommand = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
        assert_eq!(back.aggregate_id(), command.aggregate_id());
    }
    let json = serde_json::to_value(AccountCommand::from(Deposit {
        account: id("r"),
        cents: 3,
    }))
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"command": "Deposit", "account": "r", "cents": 3})
    );
    for bad in [
        r#"{"command": "Rob", "account": "r"}"#,
        r#"{"account": "r", "cents": 3}"#,
        r#"{"command": "Deposit", "account": "r"}"#,
    ] {
        assert!(
            serde_json::from_str::<AccountCommand>(bad).is_err(),
            "{bad}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Snapshots.

#[tokio::test]
async fn snapshots_every_n_events() {
    assert_eq!((Account::SNAPSHOT_EVERY, Account::SNAPSHOT_VERSION), (3, 1));
    let accounts = bank(0);
    let a = id("s");
    accounts
        .execute(Open {
            account: a.clone(),
            owner: "o".into(),
        })
        .await
        .unwrap();
    accounts
        .execute(Deposit {
            account: a.clone(),
            cents: 10,
        })
        .await
        .unwrap();
    let none = accounts
        .store()
        .load_snapshot(StreamRef::new(Account::NAME, "s"), None)
        .await
        .unwrap();
    assert!(none.is_none(), "no snapshot before 3 events");
    accounts
        .execute(Deposit {
            account: a.clone(),
            cents: 5,
        })
        .await
        .unwrap();
    let snapshot = accounts
        .store()
        .load_snapshot(StreamRef::new(Account::NAME, "s"), None)
        .await
        .unwrap()
        .expect("a snapshot at version 3");
    assert_eq!((snapshot.version, snapshot.snapshot_version), (3, 1));
    let state: Account = serde_json::from_str(&snapshot.state).unwrap();
    assert_eq!((state.balance, state.applied), (15, 3));
    assert_eq!(state.encode_snapshot().unwrap().unwrap(), snapshot.state);
}

#[tokio::test]
async fn loading_uses_a_snapshot_of_the_current_version_only() {
    let accounts = bank(0);
    let a = id("v");
    for cents in [0, 1, 2, 3] {
        if cents == 0 {
            accounts
                .execute(Open {
                    account: a.clone(),
                    owner: "o".into(),
                })
                .await
                .unwrap();
        } else {
            accounts
                .execute(Deposit {
                    account: a.clone(),
                    cents,
                })
                .await
                .unwrap();
        }
    }
    // A doctored snapshot of the current version at 3 is trusted over the events...
    let doctored = Account {
        owner: "snap".into(),
        balance: 1_000,
        frozen: false,
        applied: 0,
    };
    let save = |snapshot_version: u32, state: String| {
        accounts.store().save_snapshot(
            StreamRef::new(Account::NAME, "v"),
            Snapshot::new(3, snapshot_version, state),
        )
    };
    save(1, serde_json::to_string(&doctored).unwrap())
        .await
        .unwrap();
    let loaded = accounts.load(&a).await.unwrap();
    assert_eq!(
        (
            loaded.state.owner.as_str(),
            loaded.state.balance,
            loaded.version
        ),
        ("snap", 1_003, 4)
    );
    // ...one of another snapshot version is ignored: the state is replayed from events...
    save(0, "{\"not\": \"an account\"}".into()).await.unwrap();
    let loaded = accounts.load(&a).await.unwrap();
    assert_eq!(
        (
            loaded.state.owner.as_str(),
            loaded.state.balance,
            loaded.version
        ),
        ("o", 6, 4)
    );
    // ...and a corrupt one of the current version is an error naming the stream.
    save(1, "{\"balance\": \"lots\"}".into()).await.unwrap();
    let error = accounts.load(&a).await.unwrap_err();
    assert!(
        matches!(&error, annals::Error::Snapshot { stream_id, version: 3, .. } if stream_id == "v"),
        "{error:?}"
    );
}

/// The same stream read by a newer build of the aggregate whose snapshot schema changed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct AccountV2 {
    cents: u64,
}

#[derive(Debug, Clone, Command)]
#[command(aggregate = AccountV2)]
struct Touch {
    #[command(id)]
    account: AccountId,
}

#[aggregate(
    id = AccountId,
    event = AccountEvent,
    error = AccountError,
    name = "Account",
    snapshot(every = 1, version = 2),
    ignore(AccountOpened, Frozen, Audited),
    command_enum(skip)
)]
impl AccountV2 {
    #[command(any)]
    fn touch(&self, _: Touch) -> Result<Deposited, AccountError> {
        Ok(Deposited {
            cents: 1,
            memo: "touch".to_owned(),
        })
    }

    #[apply]
    fn deposited(&mut self, e: &Deposited) {
        self.cents += e.cents;
    }

    #[apply]
    fn withdrawn(&mut self, e: &Withdrawn) {
        self.cents -= e.cents;
    }
}

#[tokio::test]
async fn changing_the_snapshot_version_ignores_old_snapshots() {
    let store = MemoryStore::new();
    let v1 = Repository::<Account, _>::with_services(store.clone(), Bank::default());
    let a = id("m");
    v1.execute(Open {
        account: a.clone(),
        owner: "o".into(),
    })
    .await
    .unwrap();
    v1.execute(DepositMany {
        account: a.clone(),
        amounts: vec![4, 5],
    })
    .await
    .unwrap();
    let old = store
        .load_snapshot(StreamRef::new("Account", "m"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.snapshot_version, 1);

    // `Account`'s v1 snapshot does not decode as `AccountV2`: were it not ignored, this
    // load would fail.
    let v2 = Repository::<AccountV2, _>::new(store.clone());
    let loaded = v2.load(&a).await.unwrap();
    assert_eq!((loaded.state.cents, loaded.version), (9, 3));

    // A v2 write snapshots in the new version (every = 1): v2 loads from it, v1 ignores it.
    v2.execute(Touch { account: a.clone() }).await.unwrap();
    v1.execute(Deposit {
        account: a.clone(),
        cents: 1,
    })
    .await
    .unwrap();
    let newest = store
        .load_snapshot(StreamRef::new("Account", "m"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((newest.version, newest.snapshot_version), (4, 2));
    assert_eq!(v2.load(&a).await.unwrap().state.cents, 11);
    assert_eq!(v1.load(&a).await.unwrap().state.balance, 11);
}

// ---------------------------------------------------------------------------------------
// A renamed dependency.

mod renamed {
    pub use ::annals as runtime;
}

mod through_renamed_crate {
    use serde::{Deserialize, Serialize};

    use crate::renamed::runtime as rt;

    #[derive(Debug, PartialEq, rt::Event, Serialize, Deserialize)]
    #[annals(crate = "crate::renamed::runtime")]
    #[event(version = 2, upcast(from = 1, with = TickedV1))]
    pub struct Ticked {
        pub n: u32,
    }

    #[derive(Deserialize)]
    pub struct TickedV1 {
        pub count: u32,
    }

    impl From<TickedV1> for Ticked {
        fn from(v1: TickedV1) -> Self {
            Ticked { n: v1.count }
        }
    }

    #[derive(Debug, PartialEq, rt::Events)]
    #[annals(crate = "crate::renamed::runtime")]
    pub enum ClockEvent {
        Ticked(Ticked),
    }

    #[derive(Debug, Clone, rt::Command, Serialize, Deserialize)]
    #[annals(crate = "crate::renamed::runtime")]
    #[command(aggregate = Clock)]
    pub struct Tick {
        #[command(id)]
        pub clock: String,
    }

    #[derive(Debug, Default)]
    pub struct Clock {
        pub ticks: u32,
    }

    #[rt::aggregate(
        id = String,
        event = ClockEvent,
        error = std::convert::Infallible,
        crate = "crate::renamed::runtime",
        command_enum(vis = pub, name = ClockRequest)
    )]
    impl Clock {
        #[command(any)]
        fn tick(&self, cmd: Tick) -> Result<Ticked, std::convert::Infallible> {
            let _ = cmd;
            Ok(Ticked { n: self.ticks + 1 })
        }

        #[apply]
        fn ticked(&mut self, e: &Ticked) {
            self.ticks = e.n;
        }
    }
}

#[tokio::test]
async fn renamed_crate_path() {
    use through_renamed_crate::{Clock, ClockRequest, Tick, Ticked};
    assert_eq!(
        Ticked::decode(1, r#"{"count": 4}"#).unwrap(),
        Ticked { n: 4 }
    );
    let clocks = Repository::<Clock, _>::new(MemoryStore::new());
    clocks.execute(Tick { clock: "c".into() }).await.unwrap();
    let request: ClockRequest =
        serde_json::from_str(r#"{"command": "Tick", "clock": "c"}"#).unwrap();
    let done = clocks.execute(request).await.unwrap();
    assert_eq!(done.version, 2);
    assert_eq!(clocks.load(&"c".to_owned()).await.unwrap().state.ticks, 2);
}

// ---------------------------------------------------------------------------------------
// Hygiene: everything declared from inside a `macro_rules!` expansion.

macro_rules! counter_domain {
    ($agg:ident, $event:ident, $events:ident, $cmd:ident, $services:ident) => {
        #[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
        #[event(version = 2, upcast(from = 1, json = upcasters::withdrawn_v1))]
        struct $event {
            cents: u64,
        }

        #[derive(Debug, Clone, PartialEq, Events)]
        enum $events {
            Added($event),
        }

        #[derive(Debug, Clone, Command, Serialize, Deserialize)]
        #[command(aggregate = $agg)]
        struct $cmd {
            #[command(id)]
            counter: String,
            cents: u64,
        }

        #[derive(Debug, Default)]
        struct $services {
            bonus: u64,
        }

        #[derive(Debug, Default)]
        struct $agg {
            total: u64,
        }

        #[aggregate(id = String, event = $events, error = AccountError)]
        impl $agg {
            #[command(any)]
            async fn add(
                &self,
                command: $cmd,
                services: &$services,
            ) -> Result<$event, AccountError> {
                let _ = self;
                Ok($event {
                    cents: command.cents + services.bonus,
                })
            }

            #[apply]
            fn added(&mut self, event: &$event) {
                self.total += event.cents;
            }
        }
    };
}

counter_domain!(Counter, Added, CounterEvent, Add, CounterServices);

#[tokio::test]
async fn macros_work_inside_macro_rules() {
    assert_eq!(
        Added::decode(1, r#"{"sum": 2}"#).unwrap(),
        Added { cents: 2 }
    );
    let counters =
        Repository::<Counter, _>::with_services(MemoryStore::new(), CounterServices { bonus: 1 });
    let add: CounterCommand =
        serde_json::from_str(r#"{"command": "Add", "counter": "c", "cents": 2}"#).unwrap();
    counters.execute(add).await.unwrap();
    let loaded = counters.load(&"c".to_owned()).await.unwrap();
    assert_eq!((loaded.state.total, loaded.version), (3, 1));
}

/// `#[derive(Command)]` fingerprints a `Serialize` command by its type name and JSON (the
/// generated enum by the command inside), and a command without `Serialize` not at all.
#[test]
fn commands_fingerprint_their_name_and_fields() {
    let deposit = |cents| Deposit {
        account: id("a"),
        cents,
    };
    let fingerprint = deposit(5).fingerprint().expect("a Serialize command");
    assert_eq!(
        Some(fingerprint.clone()),
        annals::fingerprint("Deposit", &deposit(5))
    );
    assert_eq!(fingerprint.len(), 64);
    assert_ne!(deposit(6).fingerprint(), Some(fingerprint.clone()));
    assert_eq!(
        AccountCommand::from(deposit(5)).fingerprint(),
        Some(fingerprint)
    );
    assert_eq!(Touch { account: id("a") }.fingerprint(), None);
}
