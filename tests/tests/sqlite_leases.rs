//! SQLite leases: two store handles on one file, and two processes on one file, never both
//! run a projection. The projection here keeps no transaction (its effect is a record of
//! every delivery), so two active runners would show as events delivered twice.
//!
//! Hand-overs happen while the log is idle (the active runner has committed everything),
//! so every delivery is accounted for exactly once.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use annals::store::{EventLog, EventStore, NewEvent};
use annals::{
    projection, CommitMeta, Event, EventMeta, ExpectedVersion, ProjectionRunner, SqliteStore,
    StreamRef, Uuid,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, PartialEq, Eq, Event, Serialize, Deserialize)]
struct Opened {}

/// Records each delivery (and, in a child process, prints it at once).
struct Deliveries {
    seen: Arc<Mutex<Vec<u64>>>,
    print: bool,
}

#[projection(name = "deliveries")]
impl Deliveries {
    #[on]
    fn opened(&mut self, _: &Opened, meta: &EventMeta) {
        self.seen.lock().unwrap().push(meta.position);
        if self.print {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{DELIVERED} {}", meta.position).unwrap();
            out.flush().unwrap();
        }
    }
}

const DELIVERED: &str = "annals-lease-child: delivered";
const CHILD_DB: &str = "ANNALS_SQLITE_LEASE_CHILD_DB";

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("annals-leases-{}", Uuid::new_v4()));
        std::fs::create_dir(&path).unwrap();
        TempDir(path)
    }

    fn db(&self) -> PathBuf {
        self.0.join("events.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Appends `count` events, one stream each, with a short pause now and then so runners
/// work in many small batches.
async fn write(store: &SqliteStore, from: u64, count: u64) {
    for n in from..from + count {
        let id = format!("t{n}");
        store
            .append(
                StreamRef::new("tally", &id),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Opened", 1, "{}".to_owned())],
                &CommitMeta::new(),
            )
            .await
            .unwrap();
        if n % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
}

/// A live runner of `deliveries` on `store`, recording into `seen`, until `stop` fires.
fn spawn_runner(
    store: SqliteStore,
    seen: Arc<Mutex<Vec<u64>>>,
) -> (tokio::sync::oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        ProjectionRunner::new(store, Deliveries { seen, print: false })
            .batch_size(5)
            .idle_timeout(Duration::from_millis(20))
            .run(async {
                stopped.await.ok();
            })
            .await
            .unwrap();
    });
    (stop, task)
}

async fn caught_up(store: &SqliteStore) {
    let head = store.head().await.unwrap();
    assert!(
        annals::wait_for_checkpoint(store, "deliveries", head, Duration::from_secs(30))
            .await
            .unwrap(),
        "no runner reached position {head}"
    );
}

/// Every position 1..=head delivered exactly once over all runners.
fn assert_exactly_once(deliveries: &[&[u64]], head: u64) {
    let mut all: Vec<u64> = deliveries.iter().flat_map(|d| d.iter().copied()).collect();
    all.sort_unstable();
    let duplicates: Vec<u64> = all
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    assert!(
        duplicates.is_empty(),
        "{} events delivered twice (two runners active at once), first {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(10)]
    );
    assert_eq!(all, (1..=head).collect::<Vec<_>>(), "events missed");
}

/// Two handles on one file in one process, each running the projection live while a
/// writer appends: one delivers, the other waits; when the active one stops, the other
/// takes over; no event is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_file_never_both_run_a_projection() {
    let dir = TempDir::new();
    let first = SqliteStore::open(dir.db()).await.unwrap();
    let second = SqliteStore::open(dir.0.join(".").join("events.db"))
        .await
        .unwrap();
    let seen = [Arc::default(), Arc::default()];
    let (stop_a, a) = spawn_runner(first.clone(), Arc::clone(&seen[0]));
    let (stop_b, b) = spawn_runner(second.clone(), Arc::clone(&seen[1]));

    write(&first, 0, 150).await;
    caught_up(&first).await;
    let counts = seen
        .each_ref()
        .map(|s: &Arc<Mutex<Vec<u64>>>| s.lock().unwrap().len());
    assert!(
        counts[0] == 0 || counts[1] == 0,
        "both handles delivered: {counts:?}"
    );
    // Stop the active one: the other takes over.
    let (stop_active, active, stop_idle, idle) = if counts[0] > 0 {
        (stop_a, a, stop_b, b)
    } else {
        (stop_b, b, stop_a, a)
    };
    stop_active.send(()).unwrap();
    active.await.unwrap();
    write(&second, 150, 150).await;
    caught_up(&second).await;
    stop_idle.send(()).unwrap();
    idle.await.unwrap();

    let seen = seen.map(|s| s.lock().unwrap().clone());
    assert!(
        !seen[0].is_empty() && !seen[1].is_empty(),
        "the second handle never took over"
    );
    assert_exactly_once(&[&seen[0], &seen[1]], 300);
}

/// The child side of [`two_processes_on_one_file_never_both_run_a_projection`]: runs the
/// projection live on the file its environment names, printing each delivery, until
/// killed. Does nothing unless started by that test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_child_runner() {
    let Ok(db) = std::env::var(CHILD_DB) else {
        return;
    };
    let store = SqliteStore::open(Path::new(&db)).await.unwrap();
    ProjectionRunner::new(
        store,
        Deliveries {
            seen: Arc::default(),
            print: true,
        },
    )
    .batch_size(5)
    .idle_timeout(Duration::from_millis(20))
    .run(std::future::pending())
    .await
    .unwrap();
}

/// Kills the child process when dropped.
struct ChildProcess(Child);

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `deliveries` holds `count` positions (the child's lines reach us through a
/// pipe and a thread), or 10 s.
async fn settled(deliveries: &Mutex<Vec<u64>>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries.lock().unwrap().len() < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process and this one run the projection live on one file while this one
/// appends: one delivers, the other waits (the lease's lock file); when the active one
/// goes away (this one stops its runner, or the child is killed while idle), the other
/// takes over; no event is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_file_never_both_run_a_projection() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let mut child = ChildProcess(
        Process::new(std::env::current_exe().unwrap())
            .args([
                "lease_child_runner",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB, dir.db())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child_seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let lines = Arc::clone(&child_seen);
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print the test's name on the same line first.
            if let Some(at) = line.find(DELIVERED) {
                if let Ok(position) = line[at + DELIVERED.len()..].trim().parse() {
                    lines.lock().unwrap().push(position);
                }
            }
        }
    });
    let own_seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (stop_own, own) = spawn_runner(store.clone(), Arc::clone(&own_seen));

    write(&store, 0, 150).await;
    caught_up(&store).await;
    // The active side's lines are all out once its checkpoint is there; the other side
    // delivered nothing.
    let own_count = own_seen.lock().unwrap().len();
    if own_count == 0 {
        settled(&child_seen, 150).await;
    }
    let child_count = child_seen.lock().unwrap().len();
    assert!(
        own_count == 0 || child_count == 0,
        "both processes delivered: this one {own_count}, the child {child_count}"
    );
    let (stop_own, own) = if own_count > 0 {
        // This process was active: stop its runner; the child takes over.
        stop_own.send(()).unwrap();
        own.await.unwrap();
        (None, None)
    } else {
        // The child was active, and is idle now: kill it; this process takes over.
        drop(child);
        child = ChildProcess(Process::new("true").spawn().unwrap());
        (Some(stop_own), Some(own))
    };
    write(&store, 150, 150).await;
    caught_up(&store).await;
    let own_count = own_seen.lock().unwrap().len();
    settled(&child_seen, 300 - own_count).await;
    if let (Some(stop), Some(own)) = (stop_own, own) {
        stop.send(()).unwrap();
        own.await.unwrap();
    }
    drop(child);

    let own_seen = own_seen.lock().unwrap().clone();
    let child_seen = child_seen.lock().unwrap().clone();
    assert!(
        !own_seen.is_empty() && !child_seen.is_empty(),
        "no hand-over between the processes (this one {}, the child {})",
        own_seen.len(),
        child_seen.len()
    );
    assert_exactly_once(&[&own_seen, &child_seen], 300);
}
