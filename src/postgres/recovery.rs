//! Following a recovering server until it reaches the target.
//!
//! Success is reported only when the server says so: the `recovery stopping`
//! line for a target, then the pause, promotion or shutdown asked for. A
//! FATAL, or the server exiting, is a failure with the log lines that show
//! why.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::log::{explain_fatal, LogEvent};
use super::server::{LogFollower, Server};
use crate::interrupt;
use crate::target::{Action, Target};
use crate::wal::Lsn;

/// How long a server paused at the target may take to act on the promotion
/// asked for before pitr asks again (it normally acts within milliseconds;
/// PostgreSQL's pause loop looks again every second).
const PROMOTION_GRACE: Duration = Duration::from_secs(3);

/// Why a recovery did not end as asked. The command decides what each
/// means for its exit status; [`RecoveryError::hint`] says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Ctrl-C or SIGTERM while the server replayed: it was stopped (`how`
    /// says whether that worked) and its data directory left as it is.
    #[error("interrupted during recovery; {how}")]
    Interrupted {
        how: String,
        pgdata: PathBuf,
        /// The `pg_ctl start` that resumes the recovery.
        start_command: String,
    },
    /// The server did not reach the target: what went wrong, where replay
    /// ended and the log lines that show why.
    #[error("{summary}{}", details(.replay_ended, .log_lines))]
    NotReached {
        /// What went wrong, then `; the server was stopped` (or why stopping
        /// it failed) when it was still running.
        summary: String,
        replay_ended: Option<Lsn>,
        log_lines: Vec<String>,
        log_path: PathBuf,
        pgdata: PathBuf,
    },
}

impl RecoveryError {
    pub fn hint(&self) -> String {
        match self {
            RecoveryError::Interrupted {
                pgdata,
                start_command,
                ..
            } => format!(
                "the data directory `{}` is left as it is: start it again with `{start_command}` to resume recovery, or remove it",
                pgdata.display()
            ),
            RecoveryError::NotReached {
                log_path, pgdata, ..
            } => format!(
                "the full log is `{}`; the data directory `{}` is left for inspection",
                log_path.display(),
                pgdata.display()
            ),
        }
    }
}

fn details(replay_ended: &Option<Lsn>, log_lines: &[String]) -> String {
    let mut text = String::new();
    if let Some(lsn) = replay_ended {
        text.push_str(&format!(" (replay ended at {lsn})"));
    }
    if !log_lines.is_empty() {
        text.push_str("\nserver log:\n  ");
        text.push_str(&log_lines.join("\n  "));
    }
    text
}

/// How the server ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalState {
    Promoted,
    Paused,
    Stopped,
}

/// What the log told about the recovery.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub stop_message: Option<String>,
    pub consistent_at: Option<Lsn>,
    pub redo_done: Option<Lsn>,
    pub new_timeline: Option<u32>,
    pub last_transaction: Option<String>,
    pub restored_files: u64,
    pub shutdown_at_target: bool,
    pub warnings: Vec<String>,
}

/// What one log event means for the recovery, judged from the log alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing decided yet.
    Continue,
    /// Replay has begun: a good moment to ask for the promotion early.
    AskPromotionEarly,
    /// Paused at the target, waiting for the promotion asked for.
    PausedForPromotion,
    /// The goal is reached.
    Reached(FinalState),
    /// The recovery went wrong (the summary for the user).
    Failed(String),
    /// A FATAL or PANIC line (its message).
    Fatal(String),
}

/// Judges a recovery by its server log: the `recovery stopping` line, then
/// the pause, the promotion or `shutdown at recovery target` and `database
/// system is shut down`, as the goal asks. Whether the process was caught
/// alive plays no part: a small restore can reach its target and shut down
/// within milliseconds of `pg_ctl start`, before pitr has seen the postmaster
/// running, and it has still succeeded.
///
/// The action is the user's, already checked against the target
/// ([`Action::check`]): `promote` at a target point is pitr's promotion of
/// the server paused there; with `latest` PostgreSQL replays the whole
/// archive and promotes by itself.
#[derive(Debug)]
pub struct Judge {
    action: Action,
    /// `--to latest`: no `recovery stopping` line is expected.
    at_end: bool,
    pub observed: Observed,
}

impl Judge {
    pub fn new(action: Action, target: &Target) -> Judge {
        Judge {
            action,
            at_end: *target == Target::Latest,
            observed: Observed::default(),
        }
    }

    /// pitr itself promotes the server paused at the target.
    fn promotes_at_target(&self) -> bool {
        self.action == Action::Promote && !self.at_end
    }

    /// Takes in one event in log order.
    pub fn feed(&mut self, event: LogEvent) -> Step {
        let promotes_at_target = self.promotes_at_target();
        let (action, at_end) = (self.action, self.at_end);
        let observed = &mut self.observed;
        match event {
            LogEvent::Restored(_) => observed.restored_files += 1,
            LogEvent::RedoStarts(_) => return Step::AskPromotionEarly,
            LogEvent::Consistent(lsn) => {
                observed.consistent_at = Some(lsn);
                return Step::AskPromotionEarly;
            }
            LogEvent::Stopping(message) => observed.stop_message = Some(message),
            LogEvent::RedoDone(lsn) => observed.redo_done = Some(lsn),
            LogEvent::NewTimeline(timeline) => observed.new_timeline = Some(timeline),
            LogEvent::LastTransaction(time) => observed.last_transaction = Some(time),
            LogEvent::Warning(message) => observed.warnings.push(message),
            LogEvent::ShutdownAtTarget => observed.shutdown_at_target = true,
            LogEvent::Paused => {
                return match action {
                    Action::Pause if observed.stop_message.is_some() => {
                        Step::Reached(FinalState::Paused)
                    }
                    Action::Promote if promotes_at_target && observed.stop_message.is_some() => {
                        Step::PausedForPromotion
                    }
                    _ => Step::Failed("recovery paused before reaching the target".to_string()),
                }
            }
            LogEvent::AcceptingWrites => {
                return match action {
                    Action::Promote if at_end => Step::Reached(FinalState::Promoted),
                    Action::Promote if observed.stop_message.is_some() => {
                        Step::Reached(FinalState::Promoted)
                    }
                    _ => Step::Failed(
                        "the server ended recovery and accepts writes, but never reported reaching the target"
                            .to_string(),
                    ),
                }
            }
            LogEvent::ShutDown
                if action == Action::Shutdown
                    && observed.stop_message.is_some()
                    && observed.shutdown_at_target =>
            {
                return Step::Reached(FinalState::Stopped)
            }
            LogEvent::ShutDown => {}
            LogEvent::Fatal(message) => return Step::Fatal(message),
        }
        Step::Continue
    }

    /// The verdict once the server process is gone and its log is read to
    /// the end: reached if the log says so, else a failure.
    pub fn after_exit(&self) -> Step {
        let observed = &self.observed;
        if self.action == Action::Shutdown
            && observed.stop_message.is_some()
            && observed.shutdown_at_target
        {
            return Step::Reached(FinalState::Stopped);
        }
        Step::Failed("the server exited before reaching the target".to_string())
    }
}

/// Feeds log events to the caller (for progress) and decides when the goal
/// is reached.
///
/// Promoting at the target: the server pauses there (`recovery_target_action
/// = pause`) and is promoted, which ends recovery with an end-of-recovery
/// record instead of the full checkpoint `recovery_target_action = promote`
/// waits for. The promotion is asked for as soon as replay starts, long
/// before the target: in archive recovery (not standby mode,
/// no `recovery_min_apply_delay`), PostgreSQL 13 to 18 look at a promotion
/// request only in their pause loop, so it takes effect exactly at the
/// target, the moment the server pauses there. Asked for after the pause
/// instead, it would wait for the loop's next turn: up to a second, since
/// PostgreSQL 14 sleeps there on a condition variable that the promotion
/// signal does not wake. Should the server pause at the target without
/// promoting (the request lost, say, to a crash and restart of the startup
/// process), it is asked again.
///
/// `pid` is None when the server had already exited before pitr saw it
/// running (see [`super::server::wait_for_pid`]): the log alone decides.
pub fn follow(
    server: &Server,
    follower: &mut LogFollower,
    pid: Option<Pid>,
    action: Action,
    target: &Target,
    mut on_event: impl FnMut(&LogEvent),
    initial: Vec<LogEvent>,
) -> Result<(FinalState, Observed), RecoveryError> {
    let mut judge = Judge::new(action, target);
    let mut pending = initial;
    let mut promote_requested = false;
    let mut paused_at_target: Option<Instant> = None;
    let mut asked_again = false;
    let mut asked_again_failed: Option<(Instant, String)> = None;
    loop {
        if interrupt::requested() {
            let stopped = server.stop_fast();
            let how = match stopped {
                Ok(()) => "PostgreSQL was stopped with a fast shutdown".to_string(),
                Err(error) => format!(
                    "stopping PostgreSQL failed ({error:#}); stop it with `{}`",
                    server.pg_ctl_command("stop -m fast")
                ),
            };
            return Err(RecoveryError::Interrupted {
                how,
                pgdata: server.pgdata.clone(),
                start_command: server.pg_ctl_command("start"),
            });
        }
        // Liveness is looked at before the log is read: once the process
        // is seen gone, the read that follows holds every line it wrote.
        let gone = !pid.is_some_and(Server::is_running);
        pending.extend(follower.poll());
        for event in pending.drain(..) {
            on_event(&event);
            match judge.feed(event) {
                Step::Continue => {}
                Step::AskPromotionEarly => {
                    // Only a head start: if pg_ctl refuses, the next chance
                    // (consistency, then the pause at the target) asks again.
                    if judge.promotes_at_target() && !promote_requested && !gone {
                        promote_requested = server.promote().is_ok();
                    }
                }
                Step::PausedForPromotion => {
                    paused_at_target = Some(Instant::now());
                    if !promote_requested {
                        promote_requested = true;
                        if let Err(error) = server.promote() {
                            return Err(fail(
                                server,
                                follower,
                                &judge.observed,
                                format!("{error:#}"),
                            ));
                        }
                    }
                }
                Step::Reached(state) => return Ok((state, judge.observed)),
                Step::Failed(summary) => {
                    return Err(fail(server, follower, &judge.observed, summary))
                }
                Step::Fatal(message) => {
                    // Let the server finish writing its last lines.
                    std::thread::sleep(Duration::from_millis(300));
                    follower.poll();
                    let meaning = explain_fatal(&message)
                        .map(|meaning| format!(": {meaning}"))
                        .unwrap_or_default();
                    return Err(fail(
                        server,
                        follower,
                        &judge.observed,
                        format!("PostgreSQL failed: {message}{meaning}"),
                    ));
                }
            }
        }
        if gone {
            // The log was read to its end after the exit was seen.
            return match judge.after_exit() {
                Step::Reached(state) => Ok((state, judge.observed)),
                Step::Failed(summary) => Err(fail(server, follower, &judge.observed, summary)),
                _ => Err(fail(
                    server,
                    follower,
                    &judge.observed,
                    "the server exited before reaching the target".to_string(),
                )),
            };
        }
        if paused_at_target.is_some_and(|since| since.elapsed() > PROMOTION_GRACE) && !asked_again {
            asked_again = true;
            // pg_ctl refuses when the server is no longer in recovery: the
            // first request may have just taken effect, its lines not yet
            // read. The log decides; only if it still shows no promotion
            // after another grace period is the refusal the failure.
            if let Err(error) = server.promote() {
                asked_again_failed = Some((Instant::now(), format!("{error:#}")));
            }
        }
        if let Some((since, error)) = &asked_again_failed {
            if since.elapsed() > PROMOTION_GRACE {
                return Err(fail(server, follower, &judge.observed, error.clone()));
            }
        }
        // Each poll is a read of the log's new bytes: cheap, and the
        // promotion follows the pause line within this delay.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A recovery failure: stops the server if it still runs and shows the log
/// lines that explain it.
fn fail(
    server: &Server,
    follower: &LogFollower,
    observed: &Observed,
    summary: String,
) -> RecoveryError {
    let still_running = server.pid().is_some_and(Server::is_running);
    let stopped = if still_running {
        match server.stop_fast() {
            Ok(()) => "; the server was stopped".to_string(),
            Err(error) => format!("; stopping the server failed: {error:#}"),
        }
    } else {
        String::new()
    };
    RecoveryError::NotReached {
        summary: format!("{summary}{stopped}"),
        replay_ended: observed.redo_done,
        log_lines: follower.relevant_lines(12),
        log_path: server.log_path.clone(),
        pgdata: server.pgdata.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::postgres::binaries::Binaries;
    use crate::postgres::os_user::OsUser;
    use crate::postgres::server::wait_for_pid;

    const PREFIX: &str = "2026-12-03 20:41:07.311 UTC [91734] ";

    /// What PostgreSQL 15 wrote for a small restore with `--action
    /// shutdown` that reached its target 40 ms after `pg_ctl start`: the
    /// whole recovery, shutdown included, was over before pitr first
    /// looked for `postmaster.pid`.
    const SHUT_DOWN_BEFORE_SEEN: &str = "\
LOG:  starting PostgreSQL 15.14 (Debian 15.14-0+deb12u1) on x86_64-pc-linux-gnu
LOG:  database system was interrupted; last known up at 2026-12-03 20:41:05 UTC
LOG:  starting point-in-time recovery to 2026-12-03 20:41:06.102+00
LOG:  restored log file \"000000010000000000000003\" from archive
LOG:  redo starts at 0/3000028
LOG:  consistent recovery state reached at 0/3000100
LOG:  recovery stopping before commit of transaction 735, time 2026-12-03 20:41:06.2+00
LOG:  shutdown at recovery target
LOG:  shutting down
LOG:  database system is shut down
";

    fn log_lines(text: &str) -> String {
        text.lines()
            .map(|line| format!("{PREFIX}{line}\n"))
            .collect()
    }

    fn events(text: &str) -> Vec<LogEvent> {
        text.lines()
            .filter_map(|line| crate::postgres::log::parse_line(&format!("{PREFIX}{line}")))
            .collect()
    }

    /// A target point (any but `latest`).
    fn at_point() -> Target {
        Target::Lsn(Lsn::new(0x3000200))
    }

    fn judged(action: Action, text: &str) -> Step {
        let mut judge = Judge::new(action, &at_point());
        for event in events(text) {
            match judge.feed(event) {
                Step::Continue | Step::AskPromotionEarly => {}
                decided => return decided,
            }
        }
        judge.after_exit()
    }

    /// A server that is gone and never ran: nothing to stop, no binaries
    /// needed.
    fn gone_server(pgdata: &Path) -> Server {
        Server::new(
            pgdata,
            Binaries {
                dir: "/nonexistent".into(),
                major_version: 15,
            },
            OsUser {
                name: "nobody".into(),
                uid: nix::unistd::Uid::current(),
                gid: nix::unistd::Gid::current(),
                switch: false,
            },
        )
    }

    #[test]
    fn a_shutdown_at_the_target_is_reached_from_the_log_alone() {
        assert_eq!(
            judged(Action::Shutdown, SHUT_DOWN_BEFORE_SEEN),
            Step::Reached(FinalState::Stopped)
        );
        // Without the stop line the same shutdown is no success.
        let without_stop: String = SHUT_DOWN_BEFORE_SEEN
            .lines()
            .filter(|line| !line.contains("recovery stopping"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(matches!(
            judged(Action::Shutdown, &without_stop),
            Step::Failed(_)
        ));
        // A plain shutdown (someone stopped the server) is no success either.
        let stopped = "LOG:  redo starts at 0/3000028\nLOG:  received fast shutdown request\nLOG:  shutting down\nLOG:  database system is shut down\n";
        assert!(matches!(judged(Action::Shutdown, stopped), Step::Failed(_)));
    }

    #[test]
    fn pause_and_promotion_are_judged_from_the_log() {
        let paused = "LOG:  redo starts at 0/3000028\nLOG:  recovery stopping after commit of transaction 735, time 2026-12-03 20:41:06.2+00\nLOG:  pausing at the end of recovery\n";
        assert_eq!(
            judged(Action::Pause, paused),
            Step::Reached(FinalState::Paused)
        );
        assert_eq!(judged(Action::Promote, paused), Step::PausedForPromotion);
        let promoted = format!("{paused}LOG:  received promote request\nLOG:  redo done at 0/3000200\nLOG:  selected new timeline ID: 2\nLOG:  database system is ready to accept connections\n");
        let mut judge = Judge::new(Action::Promote, &at_point());
        let steps: Vec<Step> = events(&promoted)
            .into_iter()
            .map(|e| judge.feed(e))
            .collect();
        assert_eq!(steps.last(), Some(&Step::Reached(FinalState::Promoted)));
        // Paused without a stop line: the target was not reached.
        assert!(matches!(
            judged(Action::Pause, "LOG:  pausing at the end of recovery\n"),
            Step::Failed(_)
        ));
        // A server that exits while paused or promoting has failed.
        let mut judge = Judge::new(Action::Pause, &at_point());
        judge.feed(LogEvent::RedoStarts(Lsn::new(0x3000028)));
        assert!(matches!(judge.after_exit(), Step::Failed(_)));
    }

    #[test]
    fn latest_is_promoted_by_postgresql_at_the_end_of_the_archive() {
        let ended = "LOG:  redo starts at 0/3000028\nLOG:  redo done at 0/3000200\nLOG:  selected new timeline ID: 2\nLOG:  database system is ready to accept connections\n";
        let mut judge = Judge::new(Action::Promote, &Target::Latest);
        let steps: Vec<Step> = events(ended).into_iter().map(|e| judge.feed(e)).collect();
        assert_eq!(steps.last(), Some(&Step::Reached(FinalState::Promoted)));
        // The same log at a target point never reached it.
        assert!(matches!(judged(Action::Promote, ended), Step::Failed(_)));
        // A pause is no end of the archive.
        let mut judge = Judge::new(Action::Promote, &Target::Latest);
        let paused = events("LOG:  pausing at the end of recovery\n");
        assert!(matches!(
            judge.feed(paused.into_iter().next().unwrap()),
            Step::Failed(_)
        ));
    }

    /// The race end to end: the log holds the whole shutdown and
    /// `postmaster.pid` is already gone when pitr first looks. Waiting for
    /// the server and following it must report the shutdown at the target,
    /// not "the server did not start".
    #[test]
    fn a_server_gone_before_it_was_seen_is_judged_by_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let server = gone_server(dir.path());
        let mut follower = LogFollower::new(&server.log_path);
        std::fs::write(&server.log_path, log_lines(SHUT_DOWN_BEFORE_SEEN)).unwrap();
        let (pid, initial) = wait_for_pid(&server, &mut follower, Duration::from_secs(2)).unwrap();
        assert_eq!(pid, None);
        let (state, observed) = follow(
            &server,
            &mut follower,
            pid,
            Action::Shutdown,
            &at_point(),
            |_| {},
            initial,
        )
        .unwrap();
        assert_eq!(state, FinalState::Stopped);
        assert!(observed.stop_message.unwrap().contains("transaction 735"));

        // The same log for a goal that needs a running server is a failure
        // that shows the log, not a wait for a server that is gone.
        let mut follower = LogFollower::new(&dir.path().join("absent.log"));
        let (pid, initial) = (None, events(SHUT_DOWN_BEFORE_SEEN));
        let failure = follow(
            &server,
            &mut follower,
            pid,
            Action::Pause,
            &at_point(),
            |_| {},
            initial,
        )
        .unwrap_err();
        assert!(
            format!("{failure}").contains("exited before reaching the target"),
            "{failure}"
        );
        // Its own error, which the command maps to an exit status, with
        // what to do next.
        assert!(
            matches!(failure, RecoveryError::NotReached { .. }),
            "{failure:?}"
        );
        assert!(
            failure
                .hint()
                .contains(&server.log_path.display().to_string()),
            "{}",
            failure.hint()
        );
    }

    /// A startup FATAL ends the server: reported with its meaning, at once.
    #[test]
    fn a_fatal_before_the_server_was_seen_is_reported_with_its_meaning() {
        let dir = tempfile::tempdir().unwrap();
        let server = gone_server(dir.path());
        let mut follower = LogFollower::new(&server.log_path);
        std::fs::write(
            &server.log_path,
            log_lines("LOG:  redo starts at 0/3000028\nFATAL:  requested recovery stop point is before consistent recovery point\nLOG:  startup process (PID 91735) exited with exit code 1\nLOG:  database system is shut down\n"),
        )
        .unwrap();
        let (pid, initial) = wait_for_pid(&server, &mut follower, Duration::from_secs(2)).unwrap();
        let failure = follow(
            &server,
            &mut follower,
            pid,
            Action::Shutdown,
            &at_point(),
            |_| {},
            initial,
        )
        .unwrap_err();
        assert!(
            format!("{failure}").contains("the target lies inside the backup"),
            "{failure}"
        );
    }
}
