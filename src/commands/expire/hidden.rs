//! Backups no reader sees: one being written now or left by a `pitr
//! backup` that was killed (unfinished), and one an interrupted `expire`
//! already hid (expiring). Without this, both would take space in the
//! repository forever: they are in no listing, so no policy ever selects
//! them.
//!
//! An expiring backup was given up already: `expire` deletes it. An
//! unfinished one may be a backup running right now on another host, and
//! only the user can tell, so it is reported with its age and deleted only
//! when named (`--remove-unfinished NAME`).

use std::time::SystemTime;

use serde_json::json;

use crate::duration::format_duration;
use crate::error::{Failure, FailureKind, OrFail};
use crate::progress::Reporter;
use crate::repo::store::{HiddenGroup, HiddenState, Writable};
use crate::repo::writer::remove_backup;

/// The hidden backups of a repository, sorted into what this run deletes
/// and what it only reports.
pub struct HiddenBackups {
    /// Left by an interrupted expire: deleted.
    expiring: Vec<HiddenGroup>,
    /// Unfinished and named by the user: deleted.
    named: Vec<HiddenGroup>,
    /// Unfinished and not named: reported.
    reported: Vec<HiddenGroup>,
}

impl HiddenBackups {
    /// Finds them, and checks that every name in `remove_unfinished` is an
    /// unfinished backup (anything else is refused before anything is
    /// deleted: a typo must not be taken for permission).
    pub fn find(backups: &Writable, remove_unfinished: &[String]) -> Result<Self, Failure> {
        let hidden = backups
            .read()
            .hidden_groups()
            .or_fail(FailureKind::Internal)?;
        let (expiring, unfinished): (Vec<HiddenGroup>, Vec<HiddenGroup>) = hidden
            .into_iter()
            .partition(|group| group.state == HiddenState::Expiring);
        if let Some(unknown) = remove_unfinished
            .iter()
            .find(|name| !unfinished.iter().any(|group| &group.name == *name))
        {
            let known = if unfinished.is_empty() {
                "there is none".to_string()
            } else {
                format!(
                    "the unfinished ones are: {}",
                    unfinished
                        .iter()
                        .map(|group| group.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(Failure::msg(
                FailureKind::Usage,
                format!(
                    "`{unknown}` is not an unfinished backup in {}; nothing was removed",
                    backups.describe("")
                ),
            )
            .with_hint(format!(
                "{known} (a finished backup goes by --keep or --keep-within)"
            )));
        }
        let (named, reported) = unfinished
            .into_iter()
            .partition(|group| remove_unfinished.contains(&group.name));
        Ok(HiddenBackups {
            expiring,
            named,
            reported,
        })
    }

    /// Says what this run does with each of them.
    pub fn report(&self, backups: &Writable, dry_run: bool, reporter: &Reporter) {
        let action = if dry_run {
            "would be deleted"
        } else {
            "deleting it"
        };
        for group in &self.expiring {
            reporter.step(format!(
                "{} left behind by an interrupted expire: {action}",
                backups.describe(&group.name)
            ));
        }
        for group in &self.named {
            reporter.step(format!(
                "{} is an unfinished backup ({}), named by --remove-unfinished: {action}",
                backups.describe(&group.name),
                age(group)
            ));
        }
        for group in &self.reported {
            reporter.warn(format!(
                "{} is an unfinished backup ({}): one being written now, or left by a pitr backup that was killed; if no backup is running, `pitr expire --remove-unfinished {}` deletes it",
                backups.describe(&group.name),
                age(group),
                group.name
            ));
        }
    }

    /// Deletes the expiring ones and the named unfinished ones.
    pub fn remove(&self, backups: &Writable) -> Result<(), Failure> {
        for group in self.expiring.iter().chain(&self.named) {
            remove_backup(backups, &group.name)
                .or_fail(FailureKind::Internal)
                .map_err(|f| f.with_hint("run expire again to finish the job"))?;
        }
        Ok(())
    }

    /// How many this run deletes.
    pub fn removed_count(&self) -> usize {
        self.expiring.len() + self.named.len()
    }

    pub fn json(&self) -> serde_json::Value {
        let entries = |groups: &[HiddenGroup]| {
            groups
                .iter()
                .map(|group| json!({ "name": group.name, "hidden_seconds": hidden_for(group).as_secs() }))
                .collect::<Vec<_>>()
        };
        json!({
            "interrupted_expires": entries(&self.expiring),
            "unfinished_removed": entries(&self.named),
            "unfinished_kept": entries(&self.reported),
        })
    }
}

fn hidden_for(group: &HiddenGroup) -> std::time::Duration {
    SystemTime::now()
        .duration_since(group.since)
        .unwrap_or_default()
}

/// "hidden for 3h2m": whole minutes once past one, so the text does not
/// change every second.
fn age(group: &HiddenGroup) -> String {
    let seconds = hidden_for(group).as_secs();
    let rounded = if seconds >= 60 {
        seconds / 60 * 60
    } else {
        seconds
    };
    format!(
        "hidden for {}",
        format_duration(std::time::Duration::from_secs(rounded))
    )
}
