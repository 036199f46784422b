//! The benchmark harness of DESIGN.md "Performance": workloads W1-W7 through annals on the
//! memory, SQLite and PostgreSQL stores, each beside a hand-written raw sqlx baseline doing
//! the same logical work, printed as `RESULT` and `RATIO` lines. See docs/performance.md.

#![forbid(unsafe_code)]

mod annals_runs;
mod backends;
mod cli;
mod error;
mod plan;
mod raw;
mod report;

use std::io::Write;
use std::process::ExitCode;

use crate::backends::Setup;
use crate::cli::{Backend, Config, Workload};
use crate::error::BenchError;
use crate::report::{Impl, Measurement};

fn main() -> ExitCode {
    let config = <Config as clap::Parser>::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&config)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// Runs every selected backend and workload, printing lines as they come; returns them.
async fn run(config: &Config) -> Result<Vec<Measurement>, BenchError> {
    println!(
        "sizes: n1={} n2={} accounts={} tasks={} n3={} n4={} n5={} n6={} n7={} many_tasks={} \
         batch={} repeat={} (cores: {})",
        config.n1,
        config.n2(),
        config.accounts,
        config.tasks,
        config.n3,
        config.n4,
        config.n5,
        config.n6,
        config.n7,
        config.many_tasks,
        config.batch,
        config.repeat,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    let mut results = Vec::new();
    for &backend in config.backends.iter() {
        match backend {
            Backend::Memory => {
                bench(backends::MemorySetup, config, &mut results).await?;
            }
            Backend::Sqlite => {
                bench(backends::SqliteSetup::new()?, config, &mut results).await?;
            }
            Backend::Postgres => {
                bench(
                    backends::PostgresSetup::new(&config.database_url).await?,
                    config,
                    &mut results,
                )
                .await?;
            }
            Backend::Dynamodb => backends::dynamodb::bench(config, &mut results).await?,
        }
    }
    for line in report::ratios(&results) {
        println!("{line}");
    }
    Ok(results)
}

/// Runs the workloads on one backend, then releases its databases even when a run failed.
async fn bench<B: Setup>(
    mut setup: B,
    config: &Config,
    results: &mut Vec<Measurement>,
) -> Result<(), BenchError> {
    let mut outcome = Ok(());
    for &workload in config.workloads.iter() {
        outcome = workload_pair(&mut setup, config, workload, results).await;
        if outcome.is_err() {
            break;
        }
    }
    let finished = setup.finish().await;
    outcome.and(finished)
}

pub(crate) fn record(results: &mut Vec<Measurement>, measurement: Measurement) {
    println!("{measurement}");
    // Progress shows while a long run goes on, even when stdout is a pipe.
    let _ = std::io::stdout().flush();
    results.push(measurement);
}

/// One workload through annals, then through the raw baseline (when the backend has one).
async fn workload_pair<B: Setup>(
    setup: &mut B,
    config: &Config,
    workload: Workload,
    results: &mut Vec<Measurement>,
) -> Result<(), BenchError> {
    let accounts = config.accounts;
    let measure = |imp, n: usize, elapsed, extra| Measurement {
        imp,
        backend: B::BACKEND,
        workload,
        n: n as u64,
        elapsed,
        extra,
    };

    let store = setup.store(workload).await?;
    let annals = match workload {
        Workload::W1 => {
            let commands = plan::commands(config.n1, accounts);
            let elapsed = annals_runs::sequential(store, &commands, accounts).await?;
            measure(Impl::Annals, config.n1, elapsed, Vec::new())
        }
        Workload::W2 | Workload::W5 => {
            let (n, tasks) = concurrency(config, workload);
            let commands = plan::commands(n, accounts);
            let (elapsed, conflicts) =
                annals_runs::concurrent(store, &commands, accounts, tasks).await?;
            measure(
                Impl::Annals,
                n,
                elapsed,
                vec![("tasks", tasks as u64), ("conflicts", conflicts)],
            )
        }
        Workload::W6 => {
            // Before the jittered backoff: retries at once, as many attempts as the raw
            // baseline. Then annals' defaults.
            let eager = annals::Backoff::none();
            let hot = annals_runs::hot_stream(
                store.clone(),
                0,
                config.n6,
                config.many_tasks,
                Some(eager),
            )
            .await?;
            record(
                results,
                measure(Impl::AnnalsNoBackoff, config.n6, hot.elapsed, hot.extra()),
            );
            // Another account of the same store: the same schema, a stream of the same
            // length.
            let hot = annals_runs::hot_stream(store, 1, config.n6, config.many_tasks, None).await?;
            measure(Impl::Annals, config.n6, hot.elapsed, hot.extra())
        }
        Workload::W3 => {
            let elapsed =
                annals_runs::rehydrate(store, config.n3, config.repeat, annals_runs::W3_CHUNK)
                    .await?;
            measure(Impl::Annals, config.n3, elapsed, Vec::new())
        }
        Workload::W4 => {
            let streams = plan::streams(config.n4, accounts);
            annals_runs::seed_accounts(&store, &streams).await?;
            let replayed = setup.replay(store, config.batch).await?;
            check_handled("annals W4", replayed.handled, config.n4)?;
            expected_w4(config)
                .check_read_model("annals W4", &replayed.balances)
                .map_err(BenchError::Verify)?;
            measure(Impl::Annals, config.n4, replayed.elapsed, Vec::new())
        }
        Workload::W7 => {
            annals_runs::seed_withdrawals(&store, config.n7, accounts).await?;
            let (elapsed, handled) =
                annals_runs::react(store, config.n7, accounts, config.batch).await?;
            check_handled("annals W7", handled, config.n7)?;
            measure(
                Impl::Annals,
                config.n7,
                elapsed,
                w7_extra(config.n7, elapsed),
            )
        }
    };
    record(results, annals);

    let Some(raw) = setup.raw(workload).await? else {
        return Ok(());
    };
    let baseline = match workload {
        Workload::W1 => {
            let commands = plan::commands(config.n1, accounts);
            let elapsed = raw::sequential(&raw, &commands, accounts).await?;
            measure(Impl::Raw, config.n1, elapsed, Vec::new())
        }
        Workload::W2 | Workload::W5 => {
            let (n, tasks) = concurrency(config, workload);
            let commands = plan::commands(n, accounts);
            let (elapsed, tally) = raw::concurrent(&raw, &commands, accounts, tasks).await?;
            measure(
                Impl::Raw,
                n,
                elapsed,
                vec![
                    ("tasks", tasks as u64),
                    ("conflicts", tally.conflicts),
                    ("retries", tally.retries),
                ],
            )
        }
        Workload::W6 => {
            let hot = raw::hot_stream(&raw, config.n6, config.many_tasks).await?;
            measure(Impl::Raw, config.n6, hot.elapsed, hot.extra())
        }
        Workload::W3 => {
            let elapsed = raw::rehydrate(&raw, config.n3, config.repeat).await?;
            measure(Impl::Raw, config.n3, elapsed, Vec::new())
        }
        Workload::W4 => {
            raw::seed_accounts(&raw, &plan::streams(config.n4, accounts)).await?;
            let (elapsed, handled) = raw::replay(&raw, config.batch).await?;
            check_handled("raw W4", handled, config.n4)?;
            expected_w4(config)
                .check_read_model("raw W4", &raw::RawBaseline::read_model(&raw).await?)
                .map_err(BenchError::Verify)?;
            measure(Impl::Raw, config.n4, elapsed, Vec::new())
        }
        Workload::W7 => {
            raw::seed_withdrawals(&raw, config.n7, accounts).await?;
            let (elapsed, handled) = raw::react(&raw, config.n7, accounts, config.batch).await?;
            check_handled("raw W7", handled, config.n7)?;
            measure(Impl::Raw, config.n7, elapsed, w7_extra(config.n7, elapsed))
        }
    };
    raw::RawBaseline::close(&raw).await;
    record(results, baseline);
    Ok(())
}

/// W7's extra fields: the commands executed (one per event handled) and their rate; the
/// line's `rate` is the events handled per second.
fn w7_extra(n: usize, elapsed: std::time::Duration) -> Vec<(&'static str, u64)> {
    let commands = n as u64;
    let secs = elapsed.as_secs_f64().max(1e-9);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rate = (report::count_f64(commands) / secs).round() as u64;
    vec![("commands", commands), ("commands_rate", rate)]
}

/// W2's or W5's commands and tasks.
fn concurrency(config: &Config, workload: Workload) -> (usize, usize) {
    match workload {
        Workload::W5 => (config.n5, config.many_tasks),
        _ => (config.n2(), config.tasks),
    }
}

fn expected_w4(config: &Config) -> plan::Expected {
    plan::Expected::of(&plan::commands(config.n4, config.accounts), config.accounts)
}

fn check_handled(what: &str, handled: u64, expected: usize) -> Result<(), BenchError> {
    if handled != expected as u64 {
        return Err(BenchError::Verify(format!(
            "{what}: handled {handled} events, expected {expected}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole harness at small sizes: every run checks the state it left, so this fails
    /// if a backend, a baseline or the read models go wrong.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_backend_runs_every_workload() {
        let config = Config {
            n1: 300,
            n2: Some(300),
            accounts: 25,
            n3: 500,
            n4: 700,
            n5: 400,
            n6: 200,
            n7: 300,
            many_tasks: 16,
            batch: 64,
            repeat: 1,
            ..Config::default()
        };
        let results = run(&config).await.unwrap();
        let lines: Vec<String> = results.iter().map(ToString::to_string).collect();
        for workload in ["W1", "W2", "W3", "W4", "W5", "W6", "W7"] {
            let shape = format!("impl=annals backend=memory workload={workload} ");
            assert!(
                lines.iter().any(|l| l.contains(&shape)),
                "{shape}: {lines:#?}"
            );
            for backend in ["sqlite", "postgres"] {
                for imp in ["annals", "raw"] {
                    let shape = format!("impl={imp} backend={backend} workload={workload} ");
                    assert!(
                        lines.iter().any(|l| l.contains(&shape)),
                        "{shape}: {lines:#?}"
                    );
                }
            }
        }
        assert!(lines.iter().all(|l| l.starts_with("RESULT ")));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("impl=annals-no-backoff backend=sqlite workload=W6 ")),
            "{lines:#?}"
        );
        assert_eq!(
            report::ratios(&results).len(),
            results.iter().filter(|m| m.imp == Impl::Raw).count()
        );
    }

    /// W1 and W3 on the local DynamoDB (`annals_tests::dynamodb_endpoint`) at small sizes; the runs check
    /// the state they left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dynamodb_runs_w1_and_w3() {
        let config = Config {
            backends: cli::Selection(vec![Backend::Dynamodb]),
            dynamodb_endpoint: annals_tests::dynamodb_endpoint(),
            n1: 60,
            accounts: 6,
            n3: 150,
            repeat: 1,
            ..Config::default()
        };
        let results = run(&config).await.unwrap();
        let lines: Vec<String> = results.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 2, "{lines:#?}");
        for (line, shape) in lines.iter().zip([
            "RESULT impl=annals backend=dynamodb workload=W1 n=60 ",
            "RESULT impl=annals backend=dynamodb workload=W3 n=150 ",
        ]) {
            assert!(line.starts_with(shape), "{line}");
        }
    }
}
