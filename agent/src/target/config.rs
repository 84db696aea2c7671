//! A joining client's own config: the queues, converters and WATS server it
//! names, and its instance id (the target's name when none is given).

use crate::{cli::Args, fs::discover};

/// The pyWATS client config of `pid`; `None` when discovery is off or there is none.
pub fn client_config(args: &Args, pid: u32) -> Result<Option<discover::Discovered>, String> {
    if args.no_discover {
        return Ok(None);
    }
    let Some(path) = discover::find(&args.proc_root, pid, args.pywats_config.as_deref()) else { return Ok(None) };
    let found = discover::read(&args.proc_root, pid, &path)?;
    tracing::info!(
        "pid {pid}: pyWATS config {}: {} queue(s), {} converter(s)",
        found.config.display(),
        found.queues.len(),
        found.converters.len()
    );
    Ok(Some(found))
}

/// [`client_config`] of a process found by `--match`: a config it cannot read
/// is its own problem, logged.
pub fn guessed(args: &Args, pid: u32) -> Option<discover::Discovered> {
    client_config(args, pid).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        None
    })
}
