//! Which queues and converters the TOML file and the flags ask to watch, and
//! for which target. (A client's own config adds its own when it joins:
//! `target::config`.)

use crate::{
    cli::Args,
    error::AgentError,
    fs::{
        config::{self as fs_config, FileConfig},
        Templates,
    },
};

/// Queues and converters from the config file and the flags, each for the
/// target it names (of those starting, `names`; the first is the first `--pid`
/// target's), else for the first `--pid` target. Without `--pid` targets, one
/// that names no target is meant for every `--match` target. Each target gets
/// its own when it joins, its folders read through its own root.
pub fn watches(
    args: &Args,
    file: FileConfig,
    names: &[String],
    first_pid: Option<&str>,
) -> Result<Templates, AgentError> {
    let matching = !args.matches.is_empty();
    let owner = |t: Option<String>| -> Result<Option<String>, AgentError> {
        match (t, first_pid) {
            (Some(t), _) if matching || names.contains(&t) => Ok(Some(t)),
            (Some(t), _) => Err(AgentError::Config(format!("no target named {t:?}"))),
            (None, Some(first)) => Ok(Some(first.to_string())),
            (None, None) => Ok(None),
        }
    };
    let mut templates = Templates::default();
    let flags = args
        .queues
        .iter()
        .map(|q| fs_config::parse_queue_flag(q))
        .collect::<Result<Vec<_>, _>>()
        .map_err(AgentError::Config)?;
    for q in file.queue.into_iter().chain(flags) {
        let queue = q.spec().map_err(AgentError::Config)?;
        templates.queues.push((queue.clone(), owner(queue.target)?));
    }
    let flags = args
        .converters
        .iter()
        .map(|c| fs_config::parse_converter_flag(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(AgentError::Config)?;
    for c in file.converter.into_iter().chain(flags) {
        let (converter, target) = c.spec().map_err(AgentError::Config)?;
        templates.converters.push((converter, owner(target)?));
    }
    Ok(templates)
}
