//! PostgreSQL outages: a live runner and a writer loop keep going through a server restart
//! and a 15 s stop, and `execute` fails within the pool's acquire timeout while the server
//! is down.
//!
//! These tests stop and start a server, so each starts a PRIVATE PostgreSQL cluster of its
//! own (`initdb` and `pg_ctl` from `/usr/lib/postgresql/*/bin`, in a temporary directory, on
//! a free port, as the `postgres` user when run as root); the shared server at
//! `DATABASE_URL` is never touched. Recovery times are printed as `RECOVERY` lines (run
//! with `--nocapture`).
#![cfg(feature = "postgres")]

use std::path::PathBuf;
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals::store::EventLog;
use annals::{
    aggregate, projection, Command, CommitMeta, Event, EventMeta, Events, PgStore, PgTx,
    ProjectionRunner, Repository, StoreError, Uuid,
};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------
// A private PostgreSQL cluster.

/// A PostgreSQL cluster in a temporary directory, stopped and removed when dropped.
struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Run the server's tools as this user (`initdb` refuses root).
    run_as: Option<String>,
}

impl PrivatePostgres {
    /// Creates the cluster and starts it.
    fn start_new() -> Self {
        let bin = newest_postgres_bin();
        let dir = std::env::temp_dir().join(format!("annals-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let run_as = running_as_root().then(|| "postgres".to_owned());
        if run_as.is_some() {
            let status = Process::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("running chown");
            assert!(status.success(), "chown of {} failed", dir.display());
        }
        let port = free_port();
        let cluster = PrivatePostgres {
            dir,
            bin,
            port,
            run_as,
        };
        cluster.tool(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.start();
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs one of the server's tools.
    fn run_tool(&self, name: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
        let program = self.bin.join(name);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Process::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Process::new(&program),
        };
        command.args(args).current_dir(&self.dir).output()
    }

    /// Runs one of the server's tools, panicking with its output when it fails.
    fn tool(&self, name: &str, args: &[&str]) {
        let output = self
            .run_tool(name, args)
            .unwrap_or_else(|e| panic!("running {name}: {e}"));
        assert!(
            output.status.success(),
            "{name} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=40",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.tool(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// A fast shutdown: open sessions are terminated ("terminating connection due to
    /// administrator command"), new ones refused.
    fn stop(&self) {
        self.tool("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn restart(&self) {
        self.stop();
        self.start();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.run_tool(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn newest_postgres_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/*/bin/pg_ctl")
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // `/proc/self` belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// The domain: tallies opened one per command.

#[derive(Debug, Clone, PartialEq, Eq, Event, Serialize, Deserialize)]
struct Opened {}

#[derive(Debug, Clone, PartialEq, Eq, Events)]
enum TallyEvent {
    Opened(Opened),
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[derive(Debug, Clone, Command, Serialize, Deserialize)]
#[command(aggregate = Tally)]
struct Open {
    #[command(id)]
    tally: String,
}

#[derive(Debug, Clone, Default)]
struct Tally;

#[aggregate(name = "tally", id = String, event = TallyEvent, error = Never)]
impl Tally {
    #[command(create)]
    fn open(&self, _: Open) -> Result<Opened, Never> {
        Ok(Opened {})
    }

    #[apply]
    fn opened(&mut self, _: &Opened) {}
}

/// One row per event applied, in the projection's transaction; the primary key makes a
/// second application of an event fail (a non-transient error, which stops the runner).
struct Ledger;

#[projection(name = "outage_ledger")]
impl Ledger {
    #[on]
    async fn opened(
        &mut self,
        _: &Opened,
        meta: &EventMeta,
        tx: &mut PgTx,
    ) -> Result<(), sqlx::Error> {
        let position = i64::try_from(meta.position).expect("position fits bigint");
        sqlx::query("INSERT INTO annals.ledger (position, tally) VALUES ($1, $2)")
            .bind(position)
            .bind(&meta.stream_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

async fn open_store(cluster: &PrivatePostgres, acquire_timeout: Duration) -> PgStore {
    let store = PgStore::options()
        .max_connections(6)
        .acquire_timeout(acquire_timeout)
        .open(&cluster.url())
        .await
        .unwrap_or_else(|e| panic!("opening the private cluster: {e}"));
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS annals.ledger (position bigint PRIMARY KEY, tally text NOT NULL)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store
}

/// Executes `Open` for `tally` under one command id until it succeeds (a retry after a
/// failure whose commit may have happened appends nothing twice); returns its position and
/// the failures ridden out.
async fn open_until_done(repo: &Repository<Tally, PgStore>, tally: &str) -> (u64, u64) {
    let meta = CommitMeta::new().command_id(Uuid::new_v4());
    let mut failures = 0;
    loop {
        let command = Open {
            tally: tally.to_owned(),
        };
        match repo.execute_with(command, meta.clone()).await {
            Ok(done) => return (done.position, failures),
            Err(error) => {
                failures += 1;
                assert!(
                    matches!(&error, annals::ExecuteError::Failed(annals::Error::Store(e)) if e.is_transient()),
                    "a command failed for another reason than the outage: {error} ({error:?})"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits until the ledger's runner has processed `position`, polling through errors (the
/// store may still be reconnecting).
async fn runner_reaches(store: &PgStore, position: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(true) =
            annals::wait_for_checkpoint(store, "outage_ledger", position, Duration::from_secs(1))
                .await
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A writer loop and a live runner through a fast restart and a 15 s stop: neither gives
/// up, the runner resumes by itself, and at the end the ledger holds every event exactly
/// once. Prints the time from the server accepting connections again to a new command
/// committing and to the runner having applied it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_and_writer_ride_out_a_restart_and_a_stop() {
    let cluster = tokio::task::spawn_blocking(PrivatePostgres::start_new)
        .await
        .unwrap();
    let cluster = Arc::new(cluster);
    let store = open_store(&cluster, Duration::from_secs(2)).await;
    let repo = Repository::<Tally, _>::new(store.clone());

    let retries = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&retries);
    let mut runner = ProjectionRunner::new(store.clone(), Ledger)
        .idle_timeout(Duration::from_millis(200))
        .on_retry(move |_, _| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
    let (stop_runner, stopped) = tokio::sync::oneshot::channel::<()>();
    let live = tokio::spawn(async move {
        runner
            .run(async {
                stopped.await.ok();
            })
            .await
    });

    let writing = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicU64::new(0));
    let writer_failures = Arc::new(AtomicU64::new(0));
    let writer = {
        let (repo, writing, written, failures) = (
            repo.clone(),
            Arc::clone(&writing),
            Arc::clone(&written),
            Arc::clone(&writer_failures),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) {
                let (_, failed) = open_until_done(&repo, &format!("w{n}")).await;
                failures.fetch_add(failed, Ordering::Relaxed);
                n += 1;
                written.store(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            n
        })
    };

    let ran_for = |what: &str| {
        let n = written.load(Ordering::Relaxed);
        assert!(n > 0, "the writer wrote nothing before the {what}");
        n
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    ran_for("restart");
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.restart())
        .await
        .unwrap();
    let up = Instant::now();
    let (marker, _) = open_until_done(&repo, "after-restart").await;
    let committed = up.elapsed();
    assert!(
        runner_reaches(&store, marker, Duration::from_secs(60)).await,
        "the runner did not resume after the restart"
    );
    let applied = up.elapsed();
    println!(
        "RECOVERY restart: command committed {:.2}s, runner applied it {:.2}s after the server accepted connections",
        committed.as_secs_f64(),
        applied.as_secs_f64()
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    ran_for("stop");
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.stop()).await.unwrap();
    // Counted once the server is down (a command that committed just before may still
    // be counted: hence the one to spare below).
    let before_stop = written.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let during_stop = written.load(Ordering::Relaxed);
    assert!(
        during_stop <= before_stop + 1,
        "commands committed while the server was stopped ({before_stop} -> {during_stop})"
    );
    let c = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || c.start())
        .await
        .unwrap();
    let up = Instant::now();
    let (marker, _) = open_until_done(&repo, "after-stop").await;
    let committed = up.elapsed();
    assert!(
        runner_reaches(&store, marker, Duration::from_secs(60)).await,
        "the runner did not resume after the 15 s stop"
    );
    let applied = up.elapsed();
    println!(
        "RECOVERY stop-15s: command committed {:.2}s, runner applied it {:.2}s after the server accepted connections",
        committed.as_secs_f64(),
        applied.as_secs_f64()
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    writing.store(false, Ordering::Relaxed);
    let total = writer.await.unwrap();
    assert!(
        written.load(Ordering::Relaxed) > before_stop,
        "the writer did not resume"
    );
    let head = store.head().await.unwrap();
    assert!(
        runner_reaches(&store, head, Duration::from_secs(60)).await,
        "the runner did not catch up"
    );
    stop_runner.send(()).unwrap();
    let outcome = live.await.unwrap();
    assert!(outcome.is_ok(), "the runner gave up: {:?}", outcome.err());
    assert!(
        retries.load(Ordering::Relaxed) > 0,
        "the runner never saw the outage"
    );
    assert!(
        writer_failures.load(Ordering::Relaxed) > 0,
        "the writer never saw the outage"
    );

    // Exactly once: one ledger row per event of the log, and one event per command.
    let events: Vec<(i64, String)> =
        sqlx::query_as("SELECT position, stream_id FROM annals.annals_events ORDER BY position")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let ledger: Vec<(i64, String)> =
        sqlx::query_as("SELECT position, tally FROM annals.ledger ORDER BY position")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(ledger, events, "the read model differs from the log");
    // Every writer command plus the two markers, each appended once.
    assert_eq!(events.len() as u64, total + 2);
    println!(
        "RECOVERY totals: {} events, {} writer failures ridden out, {} runner retries",
        events.len(),
        writer_failures.load(Ordering::Relaxed),
        retries.load(Ordering::Relaxed)
    );
    store.pool().close().await;
}

/// With the server down, `execute` fails within the pool's acquire timeout (here 1 s)
/// with a transient database error, instead of blocking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_fails_within_the_acquire_timeout_while_the_server_is_down() {
    let cluster = tokio::task::spawn_blocking(PrivatePostgres::start_new)
        .await
        .unwrap();
    let timeout = Duration::from_secs(1);
    let store = open_store(&cluster, timeout).await;
    let repo = Repository::<Tally, _>::new(store.clone());
    repo.execute(Open {
        tally: "before".to_owned(),
    })
    .await
    .unwrap();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();

    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        repo.execute(Open {
            tally: "during".to_owned(),
        }),
    )
    .await
    .expect("execute blocked for 10 s during the outage");
    let took = started.elapsed();
    let error = result.expect_err("a command while the server is down");
    match &error {
        annals::ExecuteError::Failed(annals::Error::Store(e @ StoreError::Database { .. })) => {
            assert!(e.is_transient(), "{e:?}");
        }
        other => panic!("expected a database error, got {other} ({other:?})"),
    }
    assert!(
        took < timeout + Duration::from_millis(1500),
        "failed after {took:?}, the acquire timeout is {timeout:?}"
    );
    println!(
        "RECOVERY acquire-timeout: execute failed after {:.2}s: {error}",
        took.as_secs_f64()
    );

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start();
        cluster
    })
    .await
    .unwrap();
    repo.execute(Open {
        tally: "after".to_owned(),
    })
    .await
    .expect("the pool reconnects once the server is back");
    store.pool().close().await;
    drop(cluster);
}
