//! A given/when/then fixture for testing command handlers without a store.
//!
//! ```
//! use annals::testing::given;
//! # use annals::{aggregate, Command, Event, Events};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
//! # struct AccountOpened { owner: String }
//! # #[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
//! # struct Deposited { amount: u64 }
//! # #[derive(Debug, Clone, PartialEq, Events)]
//! # enum AccountEvent { AccountOpened(AccountOpened), Deposited(Deposited) }
//! # #[derive(Debug, Clone, Command, Serialize, Deserialize)]
//! # #[command(aggregate = Account)]
//! # struct Deposit { #[command(id)] account: String, amount: u64 }
//! # #[derive(Debug, PartialEq, thiserror::Error)]
//! # #[error("refused")]
//! # struct Refused;
//! # #[derive(Default)]
//! # struct Account;
//! # #[aggregate(id = String, event = AccountEvent, error = Refused, ignore(AccountOpened, Deposited))]
//! # impl Account {
//! #     #[command]
//! #     fn deposit(&self, cmd: Deposit) -> Result<Deposited, Refused> { Ok(Deposited { amount: cmd.amount }) }
//! # }
//!
//! given::<Account>([AccountOpened { owner: "ada".into() }])
//!     .when(Deposit { account: "ada".into(), amount: 5 })
//!     .then_expect([Deposited { amount: 5 }]);
//! ```

use std::fmt::Debug;

use crate::aggregate::{Aggregate, Command, Handle, StreamPolicy};
use crate::event::IntoEvents;

/// Starts a fixture from the events already in the aggregate's stream.
pub fn given<A>(events: impl IntoEvents<A::Event>) -> Given<A>
where
    A: Aggregate,
    A::Services: Default,
{
    given_with(A::Services::default(), events)
}

/// Like [`given`], with the services the handlers receive.
pub fn given_with<A: Aggregate>(
    services: A::Services,
    events: impl IntoEvents<A::Event>,
) -> Given<A> {
    let history = events.into_events();
    let mut state = A::default();
    for event in &history {
        state.apply(event);
    }
    Given {
        state,
        exists: !history.is_empty(),
        services,
    }
}

/// The aggregate state built from the given events.
pub struct Given<A: Aggregate> {
    state: A,
    exists: bool,
    services: A::Services,
}

/// What the handler did with the command.
#[derive(Debug)]
pub enum Outcome<E, Err> {
    /// It produced these events.
    Events(Vec<E>),
    /// It refused the command.
    Rejected(Err),
    /// The command's stream policy was not met (`create` on an existing stream, or the
    /// reverse); the handler did not run.
    Policy {
        /// Whether the stream existed.
        exists: bool,
    },
}

impl<A: Aggregate> Given<A> {
    /// Runs the command's handler against the state.
    pub fn when<C>(self, command: C) -> Then<A>
    where
        C: Command<Aggregate = A>,
        A: Handle<C>,
    {
        let refused = match A::policy(&command) {
            StreamPolicy::Create => self.exists,
            StreamPolicy::Existing => !self.exists,
            StreamPolicy::Any => false,
        };
        let outcome = if refused {
            Outcome::Policy {
                exists: self.exists,
            }
        } else {
            match block_on(self.state.handle(command, &self.services)) {
                Ok(events) => Outcome::Events(events),
                Err(error) => Outcome::Rejected(error),
            }
        };
        Then { outcome }
    }

    /// The state the given events built.
    pub fn state(&self) -> &A {
        &self.state
    }
}

/// Assertions on what the handler did.
#[derive(Debug)]
pub struct Then<A: Aggregate> {
    outcome: Outcome<A::Event, A::Error>,
}

impl<A: Aggregate> Then<A> {
    /// Asserts the handler produced exactly these events.
    #[track_caller]
    pub fn then_expect(self, expected: impl IntoEvents<A::Event>)
    where
        A::Event: PartialEq + Debug,
        A::Error: Debug,
    {
        let expected = expected.into_events();
        match self.outcome {
            Outcome::Events(actual) => assert_eq!(actual, expected, "unexpected events"),
            other => panic!("expected events {expected:?}, got {other:?}"),
        }
    }

    /// Asserts the handler refused the command with this error.
    #[track_caller]
    pub fn then_error(self, expected: A::Error)
    where
        A::Event: Debug,
        A::Error: PartialEq + Debug,
    {
        match self.outcome {
            Outcome::Rejected(actual) => assert_eq!(actual, expected, "unexpected error"),
            other => panic!("expected error {expected:?}, got {other:?}"),
        }
    }

    /// Asserts the handler refused the command with an error that `check` accepts.
    #[track_caller]
    pub fn then_error_matches(self, check: impl FnOnce(&A::Error) -> bool)
    where
        A::Event: Debug,
        A::Error: Debug,
    {
        match self.outcome {
            Outcome::Rejected(actual) => assert!(check(&actual), "unexpected error {actual:?}"),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Asserts the stream policy refused the command before the handler ran.
    #[track_caller]
    pub fn then_policy_refused(self)
    where
        A::Event: Debug,
        A::Error: Debug,
    {
        match self.outcome {
            Outcome::Policy { .. } => {}
            other => panic!("expected the stream policy to refuse the command, got {other:?}"),
        }
    }

    /// What the handler did, for custom assertions.
    pub fn outcome(self) -> Outcome<A::Event, A::Error> {
        self.outcome
    }
}

/// Runs a handler's future to completion. Handlers may await tokio timers or I/O, and the
/// fixture may be called from inside a tokio test, so the future runs on a fresh
/// current-thread runtime on a scoped thread.
fn block_on<F: std::future::Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("the test fixture could not start a tokio runtime")
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
