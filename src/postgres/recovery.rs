//! Following a recovering server until it reaches the target.
//!
//! Success is reported only when the server says so: the `recovery stopping`
//! line for a target, then the pause, promotion or shutdown asked for. A
//! FATAL, or the server exiting, is a failure with the log lines that show
//! why.

use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::log::{explain_fatal, LogEvent};
use super::server::{LogFollower, Server};
use crate::error::{Failure, FailureKind};
use crate::interrupt;
use crate::wal::Lsn;

/// How long a server paused at the target may take to act on the promotion
/// asked for before pitr asks again (it normally acts within milliseconds;
/// PostgreSQL's pause loop looks again every second).
const PROMOTION_GRACE: Duration = Duration::from_secs(3);

/// Where the server should end up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Pause at the target, then `pitr` promotes it (no end-of-recovery
    /// checkpoint is waited for, unlike `recovery_target_action = promote`).
    PromoteAtTarget,
    /// Stay paused at the target, read-only.
    PauseAtTarget,
    /// Shut down at the target.
    ShutdownAtTarget,
    /// No target: replay everything archived, then PostgreSQL promotes.
    PromoteAtEnd,
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
pub fn follow(
    server: &Server,
    follower: &mut LogFollower,
    pid: Pid,
    goal: Goal,
    mut on_event: impl FnMut(&LogEvent),
    initial: Vec<LogEvent>,
) -> Result<(FinalState, Observed), Failure> {
    let mut observed = Observed::default();
    let mut pending = initial;
    let mut promote_requested = false;
    let mut paused_at_target: Option<Instant> = None;
    let mut asked_again = false;
    // Only a head start: if pg_ctl refuses, the next chance (consistency,
    // then the pause at the target) asks again.
    let ask_early = |requested: &mut bool| {
        if goal == Goal::PromoteAtTarget && !*requested {
            *requested = server.promote().is_ok();
        }
    };
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
            return Err(Failure::msg(FailureKind::Interrupted, format!("interrupted during recovery; {how}")).with_hint(format!(
                "the data directory `{}` is left as it is: start it again with `{}` to resume recovery, or remove it",
                server.pgdata.display(),
                server.pg_ctl_command("start")
            )));
        }
        pending.extend(follower.poll());
        for event in pending.drain(..) {
            on_event(&event);
            match event {
                LogEvent::Restored(_) => observed.restored_files += 1,
                LogEvent::RedoStarts(_) => ask_early(&mut promote_requested),
                LogEvent::Consistent(lsn) => {
                    observed.consistent_at = Some(lsn);
                    ask_early(&mut promote_requested);
                }
                LogEvent::Stopping(message) => observed.stop_message = Some(message),
                LogEvent::RedoDone(lsn) => observed.redo_done = Some(lsn),
                LogEvent::NewTimeline(timeline) => observed.new_timeline = Some(timeline),
                LogEvent::LastTransaction(time) => observed.last_transaction = Some(time),
                LogEvent::Warning(message) => observed.warnings.push(message),
                LogEvent::ShutdownAtTarget => observed.shutdown_at_target = true,
                LogEvent::Paused => match goal {
                    Goal::PauseAtTarget if observed.stop_message.is_some() => {
                        return Ok((FinalState::Paused, observed))
                    }
                    Goal::PromoteAtTarget if observed.stop_message.is_some() => {
                        paused_at_target = Some(Instant::now());
                        if !promote_requested {
                            promote_requested = true;
                            if let Err(error) = server.promote() {
                                return Err(fail(server, follower, &observed, format!("{error:#}")));
                            }
                        }
                    }
                    _ => {
                        return Err(fail(
                            server,
                            follower,
                            &observed,
                            "recovery paused before reaching the target".to_string(),
                        ))
                    }
                },
                LogEvent::AcceptingWrites => match goal {
                    Goal::PromoteAtEnd => return Ok((FinalState::Promoted, observed)),
                    Goal::PromoteAtTarget if observed.stop_message.is_some() => {
                        return Ok((FinalState::Promoted, observed))
                    }
                    _ => {
                        return Err(fail(
                            server,
                            follower,
                            &observed,
                            "the server ended recovery and accepts writes, but never reported reaching the target".to_string(),
                        ))
                    }
                },
                LogEvent::ShutDown if goal == Goal::ShutdownAtTarget && observed.shutdown_at_target => {
                    return Ok((FinalState::Stopped, observed))
                }
                LogEvent::Fatal(message) => {
                    // Let the server finish writing its last lines.
                    std::thread::sleep(Duration::from_millis(300));
                    follower.poll();
                    let meaning = explain_fatal(&message)
                        .map(|meaning| format!(": {meaning}"))
                        .unwrap_or_default();
                    return Err(fail(server, follower, &observed, format!("PostgreSQL failed: {message}{meaning}")));
                }
                LogEvent::ShutDown => {}
            }
        }
        if paused_at_target.is_some_and(|since| since.elapsed() > PROMOTION_GRACE) && !asked_again {
            asked_again = true;
            if let Err(error) = server.promote() {
                return Err(fail(server, follower, &observed, format!("{error:#}")));
            }
        }
        if !Server::is_running(pid) {
            for event in follower.poll() {
                if event == LogEvent::ShutdownAtTarget {
                    observed.shutdown_at_target = true;
                }
            }
            if goal == Goal::ShutdownAtTarget && observed.shutdown_at_target {
                return Ok((FinalState::Stopped, observed));
            }
            return Err(fail(
                server,
                follower,
                &observed,
                "the server exited before reaching the target".to_string(),
            ));
        }
        // Each poll is a read of the log's new bytes: cheap, and the
        // promotion follows the pause line within this delay.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A recovery failure: stops the server if it still runs and shows the log
/// lines that explain it.
fn fail(server: &Server, follower: &LogFollower, observed: &Observed, summary: String) -> Failure {
    let still_running = server.pid().is_some_and(Server::is_running);
    let stopped = if still_running {
        match server.stop_fast() {
            Ok(()) => "; the server was stopped".to_string(),
            Err(error) => format!("; stopping the server failed: {error:#}"),
        }
    } else {
        String::new()
    };
    let lines = follower.relevant_lines(12);
    let mut message = format!("{summary}{stopped}");
    if let Some(lsn) = observed.redo_done {
        message.push_str(&format!(" (replay ended at {lsn})"));
    }
    if !lines.is_empty() {
        message.push_str("\nserver log:\n  ");
        message.push_str(&lines.join("\n  "));
    }
    Failure::msg(FailureKind::Recovery, message).with_hint(format!(
        "the full log is `{}`; the data directory `{}` is left for inspection",
        server.log_path.display(),
        server.pgdata.display()
    ))
}
