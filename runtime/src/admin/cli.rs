//! The command line: clap's argument types, and each command's text or JSON output.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use time::{OffsetDateTime, UtcOffset};

use super::{
    Admin, AdminError, AdminStore, DecodeFailure, DecodedEvent, VerifyReport, EXIT_FAILED,
    EXIT_PROBLEMS, EXIT_USAGE,
};
use crate::projection::Status;
use crate::store::{
    Deadline, ParkedEvent, RecordedEvent, Resolution, StreamQuery, StreamRange, StreamRef,
};

/// The admin's arguments: a command, and whether to print JSON.
///
/// Embed it in an application's own clap command line as a subcommand
/// (`Admin(annals::admin::AdminArgs)` in its `#[derive(Subcommand)]` enum) and pass it to
/// [`Admin::execute`] or [`Admin::run_args`].
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The admin commands.
#[derive(Debug, Clone, Subcommand)]
#[non_exhaustive]
pub enum AdminCommand {
    /// List streams, or show one stream's events.
    #[command(subcommand)]
    Streams(StreamsCommand),
    /// Projections: position and lag, rebuild, reset.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Events a runner set aside after its handler kept failing on them (`park_after`):
    /// list, retry, skip.
    #[command(subcommand)]
    Parked(ParkedCommand),
    /// Process managers: position and deadlines, one key's state, pending deadlines.
    #[command(subcommand)]
    Processes(ProcessesCommand),
    /// Check that every stored event decodes with the current event types and upcasters
    /// (exit code 1 listing those that do not): run it before a deploy.
    Verify {
        /// Events read per query.
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// List at most this many failures (all are counted).
        #[arg(long, default_value_t = 100)]
        max_listed: usize,
        /// Report stored event types no registered enum knows without failing on them.
        #[arg(long)]
        allow_unknown_types: bool,
    },
}

/// `streams ..`: the stream catalog and one stream's events.
#[derive(Debug, Clone, Subcommand)]
#[non_exhaustive]
pub enum StreamsCommand {
    /// List streams with their version and event count, in (type, id) order.
    List {
        /// Only streams of this type.
        #[arg(long = "type", value_name = "TYPE")]
        stream_type: Option<String>,
        /// Start after this stream (the last one of the previous page).
        #[arg(long, value_name = "TYPE/ID", value_parser = parse_stream)]
        after: Option<(String, String)>,
        /// At most this many streams.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show a stream's events decoded (after upcasting), with their metadata.
    Show {
        /// The stream type.
        #[arg(value_name = "TYPE")]
        stream_type: String,
        /// The stream id.
        #[arg(value_name = "ID")]
        stream_id: String,
        /// The first version to show.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// At most this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// Also print each event's payload as stored.
        #[arg(long)]
        raw: bool,
    },
}

/// `projections ..`: position and lag, rebuild, reset.
#[derive(Debug, Clone, Subcommand)]
#[non_exhaustive]
pub enum ProjectionsCommand {
    /// Position, head and lag of every registered projection, or of one.
    Status {
        /// The projection's name (all when left out).
        name: Option<String>,
    },
    /// Empty a projection's read model and replay every event, with a progress bar.
    Rebuild {
        /// The projection's name.
        name: String,
        /// Events per transaction.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
    },
    /// Empty a projection's read model and set its checkpoint to 0, without replaying:
    /// its runner replays every event when it next runs.
    Reset {
        /// The projection's name.
        name: String,
    },
}

/// `parked ..`: the events runners parked.
#[derive(Debug, Clone, Subcommand)]
#[non_exhaustive]
pub enum ParkedCommand {
    /// List parked events, oldest first, with the handler's last error.
    List {
        /// Only those of this runner (a projection's name).
        #[arg(long, value_name = "NAME")]
        runner: Option<String>,
        /// Also list those already retried or skipped.
        #[arg(long)]
        all: bool,
    },
    /// Hand a parked event to its projection's handler again: on success it leaves the
    /// parking (in the handler's transaction); on failure it stays parked with the new
    /// error, and the command exits with code 3.
    Retry {
        /// The parked entry's id (see `parked list`).
        id: u64,
    },
    /// Take a parked event out of the parking without handling it (it stays listed as
    /// skipped with `parked list --all`).
    Skip {
        /// The parked entry's id.
        id: u64,
    },
}

/// `processes ..`: process managers' state and deadlines.
#[derive(Debug, Clone, Subcommand)]
#[non_exhaustive]
pub enum ProcessesCommand {
    /// Position, lag and deadlines (pending, overdue, next due) of every registered process
    /// manager, or of one.
    Status {
        /// The process manager's name (all when left out).
        name: Option<String>,
    },
    /// One key's committed state (as JSON), its version, whether it ended, and its
    /// pending deadlines.
    Show {
        /// The process manager's name.
        name: String,
        /// The correlation key.
        key: String,
    },
    /// Pending deadlines, earliest first, of every registered process manager or of one.
    Deadlines {
        /// The process manager's name (all when left out).
        name: Option<String>,
        /// Only those past due.
        #[arg(long)]
        overdue: bool,
    },
}

/// The admin as a whole program.
#[derive(Debug, Parser)]
#[command(
    about = "Inspect and maintain the event store: streams, projections, verify, parked events, \
             process managers"
)]
struct AdminCli {
    #[command(flatten)]
    args: AdminArgs,
}

fn parse_stream(value: &str) -> Result<(String, String), String> {
    match value.split_once('/') {
        Some((t, id)) if !t.is_empty() && !id.is_empty() => Ok((t.to_owned(), id.to_owned())),
        _ => Err(format!("expected TYPE/ID, found `{value}`")),
    }
}

impl<S: AdminStore> Admin<S> {
    /// Parses the process's arguments and runs the command: output on stdout, errors on
    /// stderr. Returns the exit code (see the [module](super) docs).
    pub async fn run(&self) -> ExitCode {
        self.run_from(std::env::args_os()).await
    }

    /// Parses `args` (the program's name first) and runs the command on stdout and stderr.
    pub async fn run_from<I, T>(&self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        self.run_with(args, &mut std::io::stdout(), &mut std::io::stderr())
            .await
    }

    /// Parses `args` (the program's name first) and runs the command, writing its output
    /// to `out` and usage or errors to `err`.
    pub async fn run_with<I, T>(
        &self,
        args: I,
        out: &mut (dyn Write + Send),
        err: &mut (dyn Write + Send),
    ) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        match AdminCli::try_parse_from(args) {
            Ok(cli) => self.report(&cli.args, out, err).await,
            Err(error) => {
                let code = error.exit_code();
                let text = error.render().to_string();
                // Help and version go to the output, mistakes to the error stream.
                let _ = if error.use_stderr() {
                    err.write_all(text.as_bytes())
                } else {
                    out.write_all(text.as_bytes())
                };
                ExitCode::from(u8::try_from(code).unwrap_or(EXIT_USAGE))
            }
        }
    }

    /// Runs parsed arguments on stdout, reporting an error on stderr: for an [`AdminArgs`]
    /// embedded in the application's own command line.
    pub async fn run_args(&self, args: &AdminArgs) -> ExitCode {
        self.report(args, &mut std::io::stdout(), &mut std::io::stderr())
            .await
    }

    async fn report(
        &self,
        args: &AdminArgs,
        out: &mut (dyn Write + Send),
        err: &mut (dyn Write + Send),
    ) -> ExitCode {
        match self.execute(args, out).await {
            Ok(code) => code,
            Err(error) => {
                let mut message = format!("error: {error}");
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    message.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                let _ = writeln!(err, "{message}");
                ExitCode::from(EXIT_FAILED)
            }
        }
    }

    /// Runs parsed arguments, writing the output to `out`. Returns the exit code for what
    /// the command found (success, or [`EXIT_PROBLEMS`]), or why it could not finish.
    pub async fn execute(
        &self,
        args: &AdminArgs,
        out: &mut (dyn Write + Send),
    ) -> Result<ExitCode, AdminError> {
        let mut out = Output {
            out,
            json: args.json,
        };
        match &args.command {
            AdminCommand::Streams(StreamsCommand::List {
                stream_type,
                after,
                limit,
            }) => {
                let mut query = StreamQuery::new().limit(*limit);
                if let Some(t) = stream_type {
                    query = query.stream_type(t.clone());
                }
                if let Some((t, id)) = after {
                    query = query.after(StreamRef::new(t, id));
                }
                self.list_streams(&query, &mut out).await
            }
            AdminCommand::Streams(StreamsCommand::Show {
                stream_type,
                stream_id,
                from,
                limit,
                raw,
            }) => {
                let stream = StreamRef::new(stream_type, stream_id);
                let mut range = StreamRange::from(*from);
                if let Some(limit) = limit {
                    range = range.to(from.saturating_add(*limit).saturating_sub(1));
                }
                self.show_stream(stream, range, *raw, &mut out).await
            }
            AdminCommand::Projections(ProjectionsCommand::Status { name }) => {
                self.print_status(name.as_deref(), &mut out).await
            }
            AdminCommand::Projections(ProjectionsCommand::Rebuild { name, batch_size }) => {
                self.print_rebuild(name, *batch_size, &mut out).await
            }
            AdminCommand::Projections(ProjectionsCommand::Reset { name }) => {
                let from = self.reset(name).await?;
                if out.json {
                    out.json_line(&json!({ "projection": name, "reset_from": from }))?;
                } else {
                    out.line(&format!(
                        "reset `{name}`: read model emptied, checkpoint moved from {from} to 0; \
                         its runner replays every event when it next runs"
                    ))?;
                }
                Ok(ExitCode::SUCCESS)
            }
            AdminCommand::Parked(ParkedCommand::List { runner, all }) => {
                let parked = self.parked(runner.as_deref(), *all).await?;
                print_parked(&parked, &mut out)?;
                Ok(ExitCode::SUCCESS)
            }
            AdminCommand::Parked(ParkedCommand::Retry { id }) => {
                let entry = self.retry_parked(*id).await?;
                let what = parked_summary(&entry);
                if out.json {
                    out.json_line(
                        &json!({ "id": id, "runner": entry.runner, "resolution": "retried" }),
                    )?;
                } else {
                    out.line(&format!(
                        "retried parked event {id} ({what}): handled, no longer parked"
                    ))?;
                }
                Ok(ExitCode::SUCCESS)
            }
            AdminCommand::Parked(ParkedCommand::Skip { id }) => {
                let entry = self.skip_parked(*id).await?;
                let what = parked_summary(&entry);
                if out.json {
                    out.json_line(
                        &json!({ "id": id, "runner": entry.runner, "resolution": "skipped" }),
                    )?;
                } else {
                    out.line(&format!(
                        "skipped parked event {id} ({what}): never handled, no longer parked"
                    ))?;
                }
                Ok(ExitCode::SUCCESS)
            }
            AdminCommand::Processes(command) => {
                self.print_processes(command, OffsetDateTime::now_utc(), &mut out)
                    .await
            }
            AdminCommand::Verify {
                batch_size,
                max_listed,
                allow_unknown_types,
            } => {
                self.print_verify(*batch_size, *max_listed, *allow_unknown_types, &mut out)
                    .await
            }
        }
    }

    async fn list_streams(
        &self,
        query: &StreamQuery,
        out: &mut Output<'_>,
    ) -> Result<ExitCode, AdminError> {
        let streams = self.store.list_streams(query).await?;
        if out.json {
            for s in &streams {
                out.json_line(&json!({
                    "stream_type": s.stream_type,
                    "stream_id": s.stream_id,
                    "version": s.version,
                    "events": s.events,
                    "updated_at": s.updated_at.map(rfc3339),
                }))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        if streams.is_empty() {
            out.line("no streams")?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut rows = vec![row(["TYPE", "ID", "VERSION", "EVENTS", "UPDATED"])];
        for s in &streams {
            rows.push(vec![
                s.stream_type.clone(),
                s.stream_id.clone(),
                s.version.to_string(),
                s.events.to_string(),
                s.updated_at.map_or_else(|| "-".to_owned(), rfc3339),
            ]);
        }
        out.table(&rows, &[false, false, true, true, false])?;
        if let (true, Some(last)) = (streams.len() >= query.limit, streams.last()) {
            out.line(&format!("next page: --after {}", last.stream()))?;
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn show_stream(
        &self,
        stream: StreamRef<'_>,
        range: StreamRange,
        raw: bool,
        out: &mut Output<'_>,
    ) -> Result<ExitCode, AdminError> {
        let Some(version) = self.store.stream_version(stream).await? else {
            return Err(AdminError::UnknownStream {
                stream_type: stream.stream_type.to_owned(),
                stream_id: stream.stream_id.to_owned(),
            });
        };
        let events = self.store.read_stream(stream, range).await?;
        if !out.json {
            out.line(&format!(
                "stream {stream}: version {version}, showing {} event{}",
                events.len(),
                if events.len() == 1 { "" } else { "s" }
            ))?;
        }
        let mut failed = 0;
        for event in &events {
            let decoded = self.decode(event);
            failed += u32::from(decoded.is_err());
            if out.json {
                out.json_line(&event_json(event, &decoded))?;
            } else {
                out.event(event, &decoded, raw)?;
            }
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_PROBLEMS)
        })
    }

    async fn print_status(
        &self,
        name: Option<&str>,
        out: &mut Output<'_>,
    ) -> Result<ExitCode, AdminError> {
        let statuses = self.status(name).await?;
        if out.json {
            for s in &statuses {
                out.json_line(&status_json("projection", s.name, &s.status).into())?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        if statuses.is_empty() {
            out.line("no projections registered")?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut rows = vec![row(["PROJECTION", "POSITION", "HEAD", "LAG"])];
        for s in &statuses {
            rows.push(status_cells(s.name, &s.status));
        }
        out.table(&rows, &[false, true, true, true])?;
        Ok(ExitCode::SUCCESS)
    }

    async fn print_processes(
        &self,
        command: &ProcessesCommand,
        now: OffsetDateTime,
        out: &mut Output<'_>,
    ) -> Result<ExitCode, AdminError> {
        match command {
            ProcessesCommand::Status { name } => {
                let statuses = self.process_status(name.as_deref(), now).await?;
                if out.json {
                    for s in &statuses {
                        let mut fields = status_json("process", s.name, &s.status);
                        fields.insert("deadlines".into(), s.deadlines.into());
                        fields.insert("overdue".into(), s.overdue.into());
                        fields.insert("next_due".into(), s.next_due.map(rfc3339).into());
                        out.json_line(&fields.into())?;
                    }
                } else if statuses.is_empty() {
                    out.line("no process managers registered")?;
                } else {
                    let mut rows = vec![row([
                        "PROCESS",
                        "POSITION",
                        "HEAD",
                        "LAG",
                        "DEADLINES",
                        "OVERDUE",
                        "NEXT DUE",
                    ])];
                    for s in &statuses {
                        let mut cells = status_cells(s.name, &s.status);
                        cells.extend([
                            s.deadlines.to_string(),
                            s.overdue.to_string(),
                            s.next_due.map_or_else(|| "-".to_owned(), rfc3339),
                        ]);
                        rows.push(cells);
                    }
                    out.table(&rows, &[false, true, true, true, true, true, false])?;
                }
            }
            ProcessesCommand::Show { name, key } => {
                let instance = self.process_instance(name, key).await?;
                if out.json {
                    let state = instance.state.as_ref().map(|s| {
                        json!({
                            "version": s.version,
                            "ended": s.ended,
                            "state": parse_or_string(&s.state),
                        })
                    });
                    let deadlines: Vec<_> = instance
                        .deadlines
                        .iter()
                        .map(|d| deadline_json(d, now))
                        .collect();
                    out.json_line(&json!({
                        "process": instance.process,
                        "key": instance.key,
                        "state": state,
                        "deadlines": deadlines,
                    }))?;
                } else {
                    let head = format!("process {}, key {}", instance.process, instance.key);
                    match &instance.state {
                        Some(s) => {
                            out.line(&format!(
                                "{head}: version {}, {}",
                                s.version,
                                if s.ended { "ended" } else { "running" }
                            ))?;
                            // As compact JSON whatever the store kept (jsonb spaces it).
                            out.line(&format!("  state  {}", parse_or_string(&s.state)))?;
                        }
                        None => out.line(&format!("{head}: no state saved yet"))?,
                    }
                    if instance.deadlines.is_empty() {
                        out.line("no pending deadlines")?;
                    } else {
                        print_deadlines(&instance.deadlines, now, out)?;
                    }
                }
            }
            ProcessesCommand::Deadlines { name, overdue } => {
                let mut deadlines = self.deadlines(name.as_deref()).await?;
                if *overdue {
                    deadlines.retain(|d| d.due_at <= now);
                }
                if out.json {
                    for d in &deadlines {
                        out.json_line(&deadline_json(d, now))?;
                    }
                } else if deadlines.is_empty() {
                    out.line(if *overdue {
                        "no overdue deadlines"
                    } else {
                        "no pending deadlines"
                    })?;
                } else {
                    print_deadlines(&deadlines, now, out)?;
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn print_rebuild(
        &self,
        name: &str,
        batch_size: usize,
        out: &mut Output<'_>,
    ) -> Result<ExitCode, AdminError> {
        let bar = progress_bar(format!("rebuilding {name}"));
        let done = self
            .rebuild(name, batch_size, |p| {
                bar.set_length(p.head.max(p.position));
                bar.set_position(p.position);
            })
            .await;
        bar.finish_and_clear();
        let done = done?;
        if out.json {
            out.json_line(&json!({
                "projection": name,
                "handled": done.handled,
                "position": done.position,
            }))?;
        } else {
            out.line(&format!(
                "rebuilt `{name}`: {} events handled, checkpoint at position {}",
                done.handled, done.position
            ))?;
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn print_verify(
        &self,
        batch_size: usize,
        max_listed: usize,
        allow_unknown_types: bool,
        out: &mut Output<'_>,
    ) -> Result<ExitCode, AdminError> {
        let bar = progress_bar("verifying".to_owned());
        let report = self
            .verify(batch_size, max_listed, |position, head| {
                bar.set_length(head);
                bar.set_position(position);
            })
            .await;
        bar.finish_and_clear();
        let report = report?;
        print_report(&report, out)?;
        let fails = report.failed > 0 || (!allow_unknown_types && !report.unknown_types.is_empty());
        Ok(if fails {
            ExitCode::from(EXIT_PROBLEMS)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// A runner's name (under `kind`), checkpoint, the head and the lag, as JSON fields.
fn status_json(kind: &str, name: &str, status: &Status) -> serde_json::Map<String, Value> {
    let mut fields = serde_json::Map::new();
    fields.insert(kind.into(), name.into());
    fields.insert("position".into(), status.position.into());
    fields.insert("head".into(), status.head.into());
    fields.insert("lag".into(), status.lag().into());
    fields
}

/// A runner's name, checkpoint, the head and the lag, as table cells.
fn status_cells(name: &str, status: &Status) -> Vec<String> {
    vec![
        name.to_owned(),
        status.position.to_string(),
        status.head.to_string(),
        status.lag().to_string(),
    ]
}

fn print_deadlines(
    deadlines: &[Deadline],
    now: OffsetDateTime,
    out: &mut Output<'_>,
) -> Result<(), AdminError> {
    let mut rows = vec![row([
        "PROCESS",
        "KEY",
        "DEADLINE",
        "DUE",
        "OVERDUE",
        "CORRELATION",
    ])];
    for d in deadlines {
        rows.push(vec![
            d.process.clone(),
            d.key.clone(),
            d.name.clone(),
            rfc3339(d.due_at),
            overdue_by(d, now).map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s")),
            uuid_or_dash(d.correlation_id),
        ]);
    }
    out.table(&rows, &[false, false, false, false, true, false])
}

/// Seconds past due, when it is.
fn overdue_by(deadline: &Deadline, now: OffsetDateTime) -> Option<f64> {
    (deadline.due_at <= now).then(|| (now - deadline.due_at).as_seconds_f64())
}

fn deadline_json(d: &Deadline, now: OffsetDateTime) -> Value {
    json!({
        "process": d.process,
        "key": d.key,
        "deadline": d.name,
        "id": d.id,
        "due_at": rfc3339(d.due_at),
        "overdue_secs": overdue_by(d, now),
        "correlation_id": d.correlation_id,
        "causation_id": d.causation_id,
    })
}

/// Stored JSON as a value; as a string if it does not parse (it always should).
fn parse_or_string(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Runner, position, event type and stream of a parked entry, for one line of text.
fn parked_summary(entry: &ParkedEvent) -> String {
    let m = &entry.event.meta;
    format!(
        "runner `{}`, position {}, `{}` in {}/{}",
        entry.runner, m.position, m.event_type, m.stream_type, m.stream_id
    )
}

fn print_parked(parked: &[ParkedEvent], out: &mut Output<'_>) -> Result<(), AdminError> {
    if out.json {
        for p in parked {
            let m = &p.event.meta;
            out.json_line(&json!({
                "id": p.id,
                "runner": p.runner,
                "position": m.position,
                "stream_type": m.stream_type,
                "stream_id": m.stream_id,
                "version": m.version,
                "event_type": m.event_type,
                "event_version": m.event_version,
                "attempts": p.attempts,
                "parked_at": rfc3339(p.parked_at),
                "resolution": p.resolution.map(Resolution::as_str),
                "error": p.error,
            }))?;
        }
        return Ok(());
    }
    if parked.is_empty() {
        return out.line("no parked events");
    }
    let mut rows = vec![row([
        "ID", "RUNNER", "POSITION", "EVENT", "STREAM", "ATTEMPTS", "PARKED", "STATUS",
    ])];
    for p in parked {
        let m = &p.event.meta;
        rows.push(vec![
            p.id.to_string(),
            p.runner.clone(),
            m.position.to_string(),
            m.event_type.clone(),
            format!("{}/{}", m.stream_type, m.stream_id),
            p.attempts.to_string(),
            rfc3339(p.parked_at),
            p.resolution.map_or("parked", Resolution::as_str).to_owned(),
        ]);
    }
    out.table(
        &rows,
        &[true, false, true, false, false, true, false, false],
    )?;
    for p in parked {
        out.line(&format!("{}: {}", p.id, p.error))?;
    }
    Ok(())
}

fn print_report(report: &VerifyReport, out: &mut Output<'_>) -> Result<(), AdminError> {
    let unlisted = report.failed - report.failures.len() as u64;
    if out.json {
        for failure in &report.failures {
            let meta = failure.meta.as_ref();
            out.json_line(&json!({
                "position": failure.position,
                "stream_type": meta.map(|m| &m.stream_type),
                "stream_id": meta.map(|m| &m.stream_id),
                "version": meta.map(|m| m.version),
                "event_type": meta.map(|m| &m.event_type),
                "event_version": meta.map(|m| m.event_version),
                "error": failure.problem.to_string(),
            }))?;
        }
        for unknown in &report.unknown_types {
            out.json_line(&json!({
                "unknown_type": unknown.event_type,
                "events": unknown.events,
                "first_position": unknown.first_position,
                "stream_types": unknown.stream_types,
            }))?;
        }
        return out.json_line(&json!({
            "checked": report.checked,
            "failed": report.failed,
            "unknown_types": report.unknown_types.len(),
        }));
    }
    for failure in &report.failures {
        out.line(&failure.to_string())?;
    }
    if unlisted > 0 {
        out.line(&format!("... and {unlisted} more that do not decode"))?;
    }
    for unknown in &report.unknown_types {
        let types: Vec<&str> = unknown.stream_types.iter().map(String::as_str).collect();
        out.line(&format!(
            "unknown event type `{}`: {} event{} in streams of type {}, first at position {}",
            unknown.event_type,
            unknown.events,
            if unknown.events == 1 { "" } else { "s" },
            types.join(", "),
            unknown.first_position
        ))?;
    }
    let summary = if report.is_clean() {
        "all decode".to_owned()
    } else {
        format!(
            "{} do not decode, {} unknown event type{}",
            report.failed,
            report.unknown_types.len(),
            if report.unknown_types.len() == 1 {
                ""
            } else {
                "s"
            }
        )
    };
    out.line(&format!("{} events checked: {summary}", report.checked))
}

/// A progress bar on stderr while stdout is a terminal; hidden otherwise, so piped output,
/// tests and CI logs stay clean.
fn progress_bar(message: String) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})") {
        bar.set_style(style.progress_chars("#>-"));
    }
    bar.set_message(message);
    bar
}

/// RFC 3339 in UTC with microseconds (what the stores keep), so times line up in columns.
fn rfc3339(time: OffsetDateTime) -> String {
    let t = time.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

fn uuid_or_dash(id: Option<uuid::Uuid>) -> String {
    id.map_or_else(|| "-".to_owned(), |id| id.to_string())
}

fn event_json(event: &RecordedEvent, decoded: &Result<DecodedEvent, DecodeFailure>) -> Value {
    let m = &event.meta;
    let (decoded_json, error) = match decoded {
        Ok(d) => (
            json!({ "event_type": d.event_type, "event_version": d.event_version, "data": d.data }),
            None,
        ),
        Err(e) => (Value::Null, Some(e.to_string())),
    };
    json!({
        "stream_type": m.stream_type,
        "stream_id": m.stream_id,
        "version": m.version,
        "position": m.position,
        "event_id": m.event_id,
        "command_id": m.command_id,
        "correlation_id": m.correlation_id,
        "causation_id": m.causation_id,
        "recorded_at": rfc3339(m.recorded_at),
        "headers": m.headers,
        "stored_type": m.event_type,
        "stored_version": m.event_version,
        "stored_payload": event.payload,
        "decoded": decoded_json,
        "error": error,
    })
}

/// Where a command prints, as text or JSON lines.
struct Output<'a> {
    out: &'a mut (dyn Write + Send),
    json: bool,
}

impl Output<'_> {
    fn line(&mut self, text: &str) -> Result<(), AdminError> {
        writeln!(self.out, "{text}").map_err(AdminError::Output)
    }

    fn json_line(&mut self, value: &Value) -> Result<(), AdminError> {
        self.line(&value.to_string())
    }

    /// Rows in aligned columns (`right`: right-aligned, for numbers).
    fn table(&mut self, rows: &[Vec<String>], right: &[bool]) -> Result<(), AdminError> {
        let mut widths = vec![0; right.len()];
        for row in rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - cell.chars().count());
                if right[i] {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < row.len() {
                        line.push_str(&pad);
                    }
                }
            }
            self.line(&line)?;
        }
        Ok(())
    }

    fn event(
        &mut self,
        event: &RecordedEvent,
        decoded: &Result<DecodedEvent, DecodeFailure>,
        raw: bool,
    ) -> Result<(), AdminError> {
        let m = &event.meta;
        self.line("")?;
        self.line(&format!(
            "version {}  position {}  {} v{}  recorded {}",
            m.version,
            m.position,
            m.event_type,
            m.event_version,
            rfc3339(m.recorded_at)
        ))?;
        let field = |name: &str, value: &str| format!("  {name:<15} {value}");
        self.line(&field("event id", &m.event_id.to_string()))?;
        self.line(&field("command id", &uuid_or_dash(m.command_id)))?;
        self.line(&field("correlation id", &uuid_or_dash(m.correlation_id)))?;
        self.line(&field("causation id", &uuid_or_dash(m.causation_id)))?;
        for (name, value) in &m.headers {
            self.line(&field(&format!("header {name}"), value))?;
        }
        match decoded {
            Ok(d) => {
                if d.event_type != m.event_type || d.event_version != m.event_version {
                    self.line(&field(
                        "read as",
                        &format!("{} v{}", d.event_type, d.event_version),
                    ))?;
                }
                self.line(&field("data", &d.data.to_string()))?;
                if raw {
                    self.line(&field("stored data", &event.payload))?;
                }
            }
            Err(error) => {
                self.line(&field("error", &error.to_string()))?;
                self.line(&field("stored data", &event.payload))?;
            }
        }
        Ok(())
    }
}
