//! Which queues and converters to watch, and for which target: merged from
//! the pyWATS client's own config (discovery), the TOML file and the flags.

use crate::{
    cli::Args,
    error::AgentError,
    fs::{
        config::{self as fs_config, FileConfig},
        converter::ConverterSpec,
        discover,
    },
    proc::Targets,
};

/// Queues and converters the pyWATS client's own config names, per target.
/// A target without `--target-name` takes the client's instance id as its name.
pub fn discover(args: &Args, targets: &mut Targets) -> Result<FsPipelineSpec, AgentError> {
    let mut out = FsPipelineSpec { queues: Vec::new(), converters: Vec::new() };
    let pids: Vec<(u32, usize)> = targets.iter().enumerate().map(|(i, t)| (t.pid, i)).collect();
    for (pid, index) in pids {
        let found = match client_config(args, pid) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            // A config the operator named must work; one we only guessed may not.
            Err(e) if args.pywats_config.is_some() => return Err(AgentError::Config(e)),
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        if let Some(instance) = &found.instance {
            if index >= args.target_names.len() && targets.rename(pid, instance) {
                tracing::info!("target pid {pid} is pyWATS instance {instance:?}");
            }
        }
        let name = targets.iter().find(|t| t.pid == pid).map(|t| t.name.clone()).unwrap_or_default();
        tracing::info!(
            target_name = %name,
            "pyWATS config {}: {} queue(s), {} converter(s)",
            found.config.display(),
            found.queues.len(),
            found.converters.len()
        );
        out.queues.extend(found.queues.into_iter().map(|q| (q, name.clone())));
        out.converters.extend(found.converters.into_iter().map(|c| (c, name.clone())));
    }
    Ok(out)
}

/// The pyWATS client config of `pid`; `None` when discovery is off or there is none.
pub fn client_config(args: &Args, pid: u32) -> Result<Option<discover::Discovered>, String> {
    if args.no_discover {
        return Ok(None);
    }
    let Some(path) = discover::find(&args.proc_root, pid, args.pywats_config.as_deref()) else { return Ok(None) };
    discover::read(&args.proc_root, pid, &path).map(Some)
}

/// Queues and converters from the config file and the flags, each with the
/// name of the target it belongs to.
pub fn watches(args: &Args, file: FileConfig, targets: &Targets) -> Result<FsPipelineSpec, AgentError> {
    let first = targets.iter().next().map(|t| t.name.clone()).unwrap_or_default();
    let owner = |t: Option<String>| -> Result<String, AgentError> {
        match t {
            Some(t) if targets.iter().any(|x| x.name == t) => Ok(t),
            Some(t) => Err(AgentError::Config(format!("no target named {t:?}"))),
            None => Ok(first.clone()),
        }
    };
    let mut queues = Vec::new();
    let flags = args
        .queues
        .iter()
        .map(|q| fs_config::parse_queue_flag(q))
        .collect::<Result<Vec<_>, _>>()
        .map_err(AgentError::Config)?;
    for q in file.queue.into_iter().chain(flags) {
        let spec = q.spec().map_err(AgentError::Config)?;
        let target = owner(spec.target.clone())?;
        queues.push((spec, target));
    }
    let mut converters = Vec::new();
    let flags = args
        .converters
        .iter()
        .map(|c| fs_config::parse_converter_flag(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(AgentError::Config)?;
    for c in file.converter.into_iter().chain(flags) {
        let (spec, target) = c.spec().map_err(AgentError::Config)?;
        converters.push((spec, owner(target)?));
    }
    Ok(FsPipelineSpec { queues, converters })
}

/// Queues and converters, each with the name of its target.
pub struct FsPipelineSpec {
    pub queues: Vec<(fs_config::QueueSpec, String)>,
    pub converters: Vec<(ConverterSpec, String)>,
}
