//! The command line.

use std::fmt;

/// A storage backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// `annals::MemoryStore` (no raw baseline).
    Memory,
    /// `annals::SqliteStore` against raw sqlx on SQLite.
    Sqlite,
    /// `annals::PgStore` against raw sqlx on PostgreSQL.
    Postgres,
    /// `annals::DynamoDbStore` on the local DynamoDB (`--dynamodb-endpoint`): W1 and W3
    /// only (it has no global log for W4), no raw baseline. Not in `all`: asked for by name.
    Dynamodb,
}

impl Backend {
    const ALL: [Backend; 3] = [Backend::Memory, Backend::Sqlite, Backend::Postgres];
    /// Every backend `--backend` accepts by name.
    const NAMED: [Backend; 4] = [
        Backend::Memory,
        Backend::Sqlite,
        Backend::Postgres,
        Backend::Dynamodb,
    ];
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Dynamodb => "dynamodb",
        })
    }
}

/// A workload of DESIGN.md's "Performance".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// Commands one after the other: load, handle, append.
    W1,
    /// The same commands over concurrent tasks with disjoint accounts.
    W2,
    /// Rehydrate one long stream.
    W3,
    /// Replay every event in global order into a read model.
    W4,
    /// Many writers (32 tasks by default), each on its own accounts.
    W5,
    /// Many writers on one hot stream: throughput and the share of commands that ended in a
    /// version conflict.
    W6,
    /// Reactions: events already in the log handled by a reactor that sends one command per
    /// event to another aggregate (events handled and commands executed per second).
    W7,
}

impl Workload {
    const ALL: [Workload; 7] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
        Workload::W6,
        Workload::W7,
    ];
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
            Workload::W5 => "W5",
            Workload::W6 => "W6",
            Workload::W7 => "W7",
        })
    }
}

/// What to run, and how big.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(
    name = "annals-bench",
    about = "The workloads of DESIGN.md \"Performance\" on every store, beside raw sqlx",
    after_help = "Run it with `cargo run --release -p annals-bench -- [options]`; \
                  see docs/performance.md."
)]
pub struct Config {
    /// Backends, in run order: memory, sqlite, postgres, dynamodb or all (all: memory,
    /// sqlite, postgres; dynamodb runs W1 and W3).
    #[arg(long = "backend", value_name = "LIST", default_value = "all", value_parser = backends)]
    pub backends: Selection<Backend>,
    /// Workloads, in run order: w1 to w7 or all.
    #[arg(long = "workload", value_name = "LIST", default_value = "all",
          value_parser = |s: &str| list(s, &Workload::ALL))]
    pub workloads: Selection<Workload>,
    /// W1: commands, one after the other.
    #[arg(long, value_name = "N", default_value_t = DESIGN_N1, value_parser = count)]
    pub n1: usize,
    /// W2: commands over the concurrent tasks [default: --n1].
    #[arg(long, value_name = "N", value_parser = count)]
    pub n2: Option<usize>,
    /// Accounts the W1, W2, W5, W4 and W7 data is spread over.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = count)]
    pub accounts: usize,
    /// W2: concurrent tokio tasks.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = count)]
    pub tasks: usize,
    /// W3: events in the rehydrated stream.
    #[arg(long, value_name = "N", default_value_t = DESIGN_N3, value_parser = count)]
    pub n3: usize,
    /// W4: events replayed into the read model.
    #[arg(long, value_name = "N", default_value_t = 50_000, value_parser = count)]
    pub n4: usize,
    /// W5: commands over --many-tasks tasks, each on its own accounts.
    #[arg(long, value_name = "N", default_value_t = DESIGN_N1, value_parser = count)]
    pub n5: usize,
    /// W6: deposits into one hot account by --many-tasks tasks.
    #[arg(long, value_name = "N", default_value_t = 2_000, value_parser = count)]
    pub n6: usize,
    /// W7: events (withdrawals) in the log, each swept into a savings account by a reactor
    /// (over --accounts accounts, batches of --batch events).
    #[arg(long, value_name = "N", default_value_t = DESIGN_N1, value_parser = count)]
    pub n7: usize,
    /// W5 and W6: concurrent tokio tasks.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = count)]
    pub many_tasks: usize,
    /// W4 and W7: events per batch (read-model transaction, checkpoint move) in both
    /// implementations.
    #[arg(long, value_name = "N", default_value_t = crate::raw::DEFAULT_BATCH, value_parser = count)]
    pub batch: usize,
    /// W3: timed loads, the median is reported.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = count)]
    pub repeat: usize,
    /// The PostgreSQL server; the harness works in fresh schemas it drops at the end.
    #[arg(
        long,
        value_name = "URL",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub database_url: String,
    /// The DynamoDB server; the harness works in fresh tables it deletes at the end.
    #[arg(
        long,
        value_name = "URL",
        env = "DYNAMODB_ENDPOINT",
        default_value = "http://127.0.0.1:8000"
    )]
    pub dynamodb_endpoint: String,
}

impl Config {
    /// W2's command count.
    pub fn n2(&self) -> usize {
        self.n2.unwrap_or(self.n1)
    }
}

/// The sizes DESIGN.md's "Performance" names.
pub const DESIGN_N1: usize = 20_000;
/// The W3 stream length DESIGN.md names.
pub const DESIGN_N3: usize = 50_000;

impl Default for Config {
    fn default() -> Self {
        <Config as clap::Parser>::parse_from(["annals-bench"])
    }
}

/// A list of backends or workloads, sorted, without repeats, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection<T>(pub Vec<T>);

impl<T> std::ops::Deref for Selection<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}

/// `--backend`: names from every backend, `all` for the default three.
fn backends(value: &str) -> Result<Selection<Backend>, String> {
    let mut out = Vec::new();
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name.eq_ignore_ascii_case("all") {
            out.extend_from_slice(&Backend::ALL);
        } else {
            out.extend(list(name, &Backend::NAMED)?.0);
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(format!("empty list `{value}`"));
    }
    Ok(Selection(out))
}

/// A count, written with optional `_` separators, at least 1.
fn count(value: &str) -> Result<usize, String> {
    let n: usize = value
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    if n == 0 {
        return Err("must be at least 1".to_owned());
    }
    Ok(n)
}

fn list<T: Copy + fmt::Display + Ord>(value: &str, all: &[T]) -> Result<Selection<T>, String> {
    let mut out = Vec::new();
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name.eq_ignore_ascii_case("all") {
            out.extend_from_slice(all);
            continue;
        }
        let found = all
            .iter()
            .find(|item| item.to_string().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let names: Vec<String> = all.iter().map(|i| i.to_string().to_lowercase()).collect();
                format!("unknown `{name}`: expected one of {}", names.join(", "))
            })?;
        out.push(*found);
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(format!("empty list `{value}`"));
    }
    Ok(Selection(out))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(s: &str) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("annals-bench").chain(s.split_whitespace()))
    }

    #[test]
    fn defaults_are_the_design_sizes() {
        let config = parse("").unwrap();
        assert_eq!(*config.backends, Backend::ALL);
        assert_eq!(*config.workloads, Workload::ALL);
        assert_eq!(
            (config.n1, config.n2(), config.n3),
            (DESIGN_N1, DESIGN_N1, DESIGN_N3)
        );
        assert_eq!(config.many_tasks, 32);
    }

    #[test]
    fn flags_take_separate_or_inline_values() {
        let config =
            parse("--backend sqlite,MEMORY --workload=w3,w1,W6 --n1 1_000 --n3=5").unwrap();
        assert_eq!(*config.backends, [Backend::Memory, Backend::Sqlite]);
        assert_eq!(
            *config.workloads,
            [Workload::W1, Workload::W3, Workload::W6]
        );
        assert_eq!((config.n1, config.n2(), config.n3), (1_000, 1_000, 5));
    }

    #[test]
    fn bad_arguments_are_named() {
        for (input, needle) in [
            ("--backend mysql", "mysql"),
            ("--n1 ten", "ten"),
            ("--tasks 0", "--tasks"),
            ("--frobnicate", "--frobnicate"),
            ("--n3", "--n3"),
        ] {
            let err = parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
        assert_eq!(
            parse("--help").unwrap_err().kind(),
            clap::error::ErrorKind::DisplayHelp
        );
    }
}
