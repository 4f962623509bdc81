//! `pitr plan`: what a restore would do, and nothing else.

use crate::cli::PlanArgs;
use crate::error::Failure;
use crate::progress::Reporter;

pub fn run(args: &PlanArgs, json: bool, reporter: &Reporter) -> Result<(), Failure> {
    let local = super::local_zone();
    let target = super::parse_target_args(&args.target)?;
    let (catalog, plan) =
        super::plan_from_args(&args.repo, &args.target, target, &local, reporter)?;
    let delta = match (&args.pgdata, args.delta) {
        (Some(pgdata), true) => Some(super::delta_preview(
            &plan,
            pgdata,
            &args.tablespace_mappings,
        )?),
        _ => None,
    };
    super::print_plan(
        &plan,
        catalog.stores.backups.as_ref(),
        delta.as_ref(),
        json,
        &local,
    );
    Ok(())
}
