//! Which queues and converters to watch, and for which target: merged from
//! the pyWATS client's own config (discovery), the TOML file and the flags.

use crate::{
    cli::Args,
    error::AgentError,
    fs::{
        config::{self as fs_config, FileConfig},
        converter::ConverterSpec,
        discover, Templates,
    },
    proc::Targets,
};

/// Queues and converters the pyWATS client's own config names, per target.
/// A target without `--target-name` takes the client's instance id as its name.
pub fn discover(args: &Args, targets: &mut Targets) -> Result<FsPipelineSpec, AgentError> {
    let mut out = FsPipelineSpec { queues: Vec::new(), converters: Vec::new(), services: Vec::new() };
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
        out.services.extend(found.service.map(|s| (name.clone(), s)));
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
/// name of the target it belongs to: the one it names, else the first `--pid`
/// target. Without `--pid` targets they are templates: every `--match`
/// target found (or the one named) gets its own, read through its own root.
pub fn watches(args: &Args, file: FileConfig, targets: &Targets) -> Result<(FsPipelineSpec, Templates), AgentError> {
    let first = targets.iter().find(|t| t.pattern.is_none()).map(|t| t.name.clone());
    let matching = !args.matches.is_empty();
    // Ok(Ok(name)): that target's now; Ok(Err(filter)): a template.
    let owner = |t: Option<String>| -> Result<Result<String, Option<String>>, AgentError> {
        match (t, &first) {
            (Some(t), _) if targets.iter().any(|x| x.name == t) => Ok(Ok(t)),
            (Some(t), _) if matching => Ok(Err(Some(t))),
            (Some(t), _) => Err(AgentError::Config(format!("no target named {t:?}"))),
            (None, Some(first)) => Ok(Ok(first.clone())),
            (None, None) => Ok(Err(None)),
        }
    };
    let (mut spec, mut templates) =
        (FsPipelineSpec { queues: Vec::new(), converters: Vec::new(), services: Vec::new() }, Templates::default());
    let flags = args
        .queues
        .iter()
        .map(|q| fs_config::parse_queue_flag(q))
        .collect::<Result<Vec<_>, _>>()
        .map_err(AgentError::Config)?;
    for q in file.queue.into_iter().chain(flags) {
        let queue = q.spec().map_err(AgentError::Config)?;
        match owner(queue.target.clone())? {
            Ok(target) => spec.queues.push((queue, target)),
            Err(filter) => templates.queues.push((queue, filter)),
        }
    }
    let flags = args
        .converters
        .iter()
        .map(|c| fs_config::parse_converter_flag(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(AgentError::Config)?;
    for c in file.converter.into_iter().chain(flags) {
        let (converter, target) = c.spec().map_err(AgentError::Config)?;
        match owner(target)? {
            Ok(target) => spec.converters.push((converter, target)),
            Err(filter) => templates.converters.push((converter, filter)),
        }
    }
    Ok((spec, templates))
}

/// Queues and converters, each with the name of its target, and the WATS
/// service address of the targets whose client config names one.
pub struct FsPipelineSpec {
    pub queues: Vec<(fs_config::QueueSpec, String)>,
    pub converters: Vec<(ConverterSpec, String)>,
    /// (target, the client's `service_address`).
    pub services: Vec<(String, String)>,
}
