//! The given/when/then fixture fails when it should: each assertion is checked against an
//! outcome it must reject, so a passing fixture test means something.

use annals::testing::given;
use annals::{aggregate, Command, Event, Events};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Opened;

#[derive(Debug, Clone, PartialEq, Event, Serialize, Deserialize)]
struct Rang {
    times: u32,
}

#[derive(Debug, Clone, PartialEq, Events)]
enum BellEvent {
    Opened(Opened),
    Rang(Rang),
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum BellError {
    #[error("too many rings")]
    TooMany,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Bell)]
struct Open {
    #[command(id)]
    id: String,
}

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Bell)]
struct Ring {
    #[command(id)]
    id: String,
    times: u32,
}

#[derive(Default)]
struct Bell;

#[aggregate(id = String, event = BellEvent, error = BellError)]
impl Bell {
    #[command(create)]
    fn open(&self, _: Open) -> Result<Opened, BellError> {
        Ok(Opened)
    }

    #[command]
    async fn ring(&self, cmd: Ring) -> Result<Rang, BellError> {
        tokio::task::yield_now().await;
        if cmd.times > 3 {
            return Err(BellError::TooMany);
        }
        Ok(Rang { times: cmd.times })
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {}

    #[apply]
    fn rang(&mut self, _: &Rang) {}
}

fn ring(times: u32) -> Ring {
    Ring {
        id: "b".into(),
        times,
    }
}

#[test]
fn passes_on_the_right_outcomes() {
    given::<Bell>([Opened])
        .when(ring(2))
        .then_expect(Rang { times: 2 });
    given::<Bell>([Opened])
        .when(ring(9))
        .then_error(BellError::TooMany);
    given::<Bell>([Opened])
        .when(ring(9))
        .then_error_matches(|e| *e == BellError::TooMany);
    given::<Bell>(()).when(ring(1)).then_policy_refused();
    given::<Bell>([Opened])
        .when(Open { id: "b".into() })
        .then_policy_refused();
}

#[test]
#[should_panic(expected = "unexpected events")]
fn then_expect_rejects_other_events() {
    given::<Bell>([Opened])
        .when(ring(2))
        .then_expect(Rang { times: 3 });
}

#[test]
#[should_panic(expected = "expected events")]
fn then_expect_rejects_an_error() {
    given::<Bell>([Opened])
        .when(ring(9))
        .then_expect(Rang { times: 9 });
}

#[test]
#[should_panic(expected = "expected error")]
fn then_error_rejects_events() {
    given::<Bell>([Opened])
        .when(ring(1))
        .then_error(BellError::TooMany);
}

#[test]
#[should_panic(expected = "unexpected error")]
fn then_error_matches_rejects_a_failed_check() {
    given::<Bell>([Opened])
        .when(ring(9))
        .then_error_matches(|_| false);
}

#[test]
#[should_panic(expected = "expected the stream policy to refuse")]
fn then_policy_refused_rejects_a_handled_command() {
    given::<Bell>([Opened]).when(ring(1)).then_policy_refused();
}

#[tokio::test]
async fn works_inside_a_tokio_test() {
    given::<Bell>([Opened])
        .when(ring(3))
        .then_expect(Rang { times: 3 });
}
