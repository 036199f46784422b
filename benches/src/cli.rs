//! The command line.

use std::fmt;

use crate::error::BenchError;

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
}

impl Workload {
    const ALL: [Workload; 4] = [Workload::W1, Workload::W2, Workload::W3, Workload::W4];
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
        })
    }
}

/// What to run, and how big.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Backends, in run order.
    pub backends: Vec<Backend>,
    /// Workloads, in run order.
    pub workloads: Vec<Workload>,
    /// Commands in W1.
    pub n1: usize,
    /// Commands in W2.
    pub n2: usize,
    /// Accounts the commands of W1 and W2 and the events of W4 are spread over.
    pub accounts: usize,
    /// Concurrent tasks in W2.
    pub tasks: usize,
    /// Events in the W3 stream.
    pub n3: usize,
    /// Events replayed in W4.
    pub n4: usize,
    /// Events per projection transaction in W4 (both implementations).
    pub batch: usize,
    /// How many times W3's load is timed (the median is reported).
    pub repeat: usize,
    /// The PostgreSQL server; the harness works in fresh schemas it drops at the end.
    pub database_url: String,
    /// The DynamoDB server; the harness works in fresh tables it deletes at the end.
    pub dynamodb_endpoint: String,
}

/// The sizes DESIGN.md's "Performance" names.
pub const DESIGN_N1: usize = 20_000;
/// The W3 stream length DESIGN.md names.
pub const DESIGN_N3: usize = 50_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            backends: Backend::ALL.to_vec(),
            workloads: Workload::ALL.to_vec(),
            n1: DESIGN_N1,
            n2: DESIGN_N1,
            accounts: 1_000,
            tasks: 8,
            n3: DESIGN_N3,
            n4: 50_000,
            batch: crate::raw::DEFAULT_BATCH,
            repeat: 3,
            database_url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
            dynamodb_endpoint: std::env::var("DYNAMODB_ENDPOINT")
                .unwrap_or_else(|_| "http://127.0.0.1:8000".to_owned()),
        }
    }
}

/// The `--help` text.
pub const USAGE: &str = "\
annals-bench: the workloads of DESIGN.md \"Performance\" on every store, beside raw sqlx

usage: cargo run --release -p annals-bench -- [options]

  --backend LIST     memory,sqlite,postgres,dynamodb or all         [all]
                     (all: memory,sqlite,postgres; dynamodb runs W1 and W3)
  --workload LIST    w1,w2,w3,w4 or all                             [all]
  --n1 N             W1: commands, one after the other              [20000]
  --n2 N             W2: commands over the concurrent tasks         [--n1]
  --accounts N       accounts the W1, W2 and W4 data is spread over [1000]
  --tasks N          W2: concurrent tokio tasks                     [8]
  --n3 N             W3: events in the rehydrated stream            [50000]
  --n4 N             W4: events replayed into the read model        [50000]
  --batch N          W4: events per read-model transaction          [500]
  --repeat N         W3: timed loads, the median is reported        [3]
  --database-url URL PostgreSQL server       [$DATABASE_URL or postgres://postgres@127.0.0.1:5432/test]
  --dynamodb-endpoint URL  local DynamoDB    [$DYNAMODB_ENDPOINT or http://127.0.0.1:8000]
  -h, --help         this text
";

/// Parses the arguments (without the program name). `Ok(None)` means help was asked for.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Option<Config>, BenchError> {
    let mut config = Config::default();
    let mut n2 = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| BenchError::Usage(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--backend" => config.backends = backends(&value()?)?,
            "--workload" => config.workloads = list(&value()?, &Workload::ALL)?,
            "--n1" => config.n1 = number(&flag, &value()?, 1)?,
            "--n2" => n2 = Some(number(&flag, &value()?, 1)?),
            "--accounts" => config.accounts = number(&flag, &value()?, 1)?,
            "--tasks" => config.tasks = number(&flag, &value()?, 1)?,
            "--n3" => config.n3 = number(&flag, &value()?, 1)?,
            "--n4" => config.n4 = number(&flag, &value()?, 1)?,
            "--batch" => config.batch = number(&flag, &value()?, 1)?,
            "--repeat" => config.repeat = number(&flag, &value()?, 1)?,
            "--database-url" => config.database_url = value()?,
            "--dynamodb-endpoint" => config.dynamodb_endpoint = value()?,
            _ => return Err(BenchError::Usage(format!("unknown argument `{flag}`"))),
        }
    }
    config.n2 = n2.unwrap_or(config.n1);
    Ok(Some(config))
}

/// `--backend`: names from every backend, `all` for the default three.
fn backends(value: &str) -> Result<Vec<Backend>, BenchError> {
    let mut out = Vec::new();
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name.eq_ignore_ascii_case("all") {
            out.extend_from_slice(&Backend::ALL);
        } else {
            out.extend(list(name, &Backend::NAMED)?);
        }
    }
    Ok(out)
}

fn number(flag: &str, value: &str, min: usize) -> Result<usize, BenchError> {
    let n: usize = value
        .replace('_', "")
        .parse()
        .map_err(|_| BenchError::Usage(format!("{flag} takes a number, not `{value}`")))?;
    if n < min {
        return Err(BenchError::Usage(format!("{flag} must be at least {min}")));
    }
    Ok(n)
}

fn list<T: Copy + fmt::Display + Ord>(value: &str, all: &[T]) -> Result<Vec<T>, BenchError> {
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
                BenchError::Usage(format!(
                    "unknown `{name}`: expected one of {}",
                    names.join(", ")
                ))
            })?;
        out.push(*found);
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(BenchError::Usage(format!("empty list `{value}`")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn defaults_are_the_design_sizes() {
        let config = parse(Vec::new()).unwrap().unwrap();
        assert_eq!(config.backends, Backend::ALL);
        assert_eq!(config.workloads, Workload::ALL);
        assert_eq!(
            (config.n1, config.n2, config.n3),
            (DESIGN_N1, DESIGN_N1, DESIGN_N3)
        );
    }

    #[test]
    fn flags_take_separate_or_inline_values() {
        let config = parse(args(
            "--backend sqlite,MEMORY --workload=w3,w1 --n1 1_000 --n3=5",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(config.backends, [Backend::Memory, Backend::Sqlite]);
        assert_eq!(config.workloads, [Workload::W1, Workload::W3]);
        assert_eq!((config.n1, config.n2, config.n3), (1_000, 1_000, 5));
    }

    #[test]
    fn bad_arguments_are_named() {
        for (input, needle) in [
            ("--backend mysql", "mysql"),
            ("--n1 ten", "ten"),
            ("--tasks 0", "--tasks"),
            ("--frobnicate", "--frobnicate"),
            ("--n3", "needs a value"),
        ] {
            let err = parse(args(input)).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
        assert!(parse(args("--help")).unwrap().is_none());
    }
}
