//! `pitr plan`: what a restore would do, and nothing else.

use crate::cli::PlanArgs;
use crate::error::Failure;
use crate::progress::Reporter;

pub fn run(args: &PlanArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    let local = super::local_zone();
    let target = super::parse_target_args(&args.target)?;
    let (catalog, plan) =
        super::plan_from_args(&args.repo, &args.target, target, &local, reporter)?;
    if json {
        println!(
            "{:#}",
            super::plan_json(&plan, catalog.stores.backups.as_ref(), &local)
        );
    } else {
        println!("{}", super::plan_text(&plan, &local));
    }
    Ok(())
}
