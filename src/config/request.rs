//! `--url` and its flags, checked before anything runs: the request
//! template, what the other flags mean in this mode, and the TLS setup.

use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::Result;
use log::warn;

use crate::cli::RunArgs;
use crate::exit::Fatal;
use crate::http::{self, RequestTemplate, Scheme};
use crate::supervise::Options;

/// `--timeout` with `--url` when none is given: a server that stops
/// answering costs this, not the whole run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `--max-concurrent` with `--url` when none is given.
pub const DEFAULT_CAP: usize = 64;

/// A checked `--url` run.
pub struct RequestConfig {
    pub template: RequestTemplate,
    tls: Option<http::Tls>,
}

/// `None` without `--url`; otherwise the request, or a usage error for a
/// flag that makes no sense with it.
pub fn from_args(args: &RunArgs) -> Result<Option<RequestConfig>> {
    let Some(url) = &args.url else {
        let given = [
            (args.method.is_some(), "--method"),
            (!args.headers.is_empty(), "--header"),
            (args.data.is_some(), "--data"),
            (args.cacert.is_some(), "--cacert"),
        ];
        if let Some((_, flag)) = given.iter().find(|(set, _)| *set) {
            return Err(
                Fatal::usage(format!("{flag} is for requests, and needs --url"))
                    .hint("give --url URL instead of a command after --, or drop the option")
                    .into(),
            );
        }
        return Ok(None);
    };
    // Options about a process refuse --url.
    if args.detach {
        return Err(Fatal::usage("--detach cannot be combined with --url")
            .hint("the request is made by scatter itself, so it ends when scatter does; drop --detach")
            .into());
    }
    let priority = [
        (args.protect.nice.is_some(), "--nice"),
        (args.protect.ionice.is_some(), "--ionice"),
    ];
    if let Some((_, flag)) = priority.iter().find(|(set, _)| *set) {
        return Err(Fatal::usage(format!("{flag} cannot be combined with --url"))
            .hint("a request is made by scatter itself, not by a task process whose priority could be set; drop the option")
            .into());
    }
    let template = RequestTemplate::parse(url, args.method, &args.headers, args.data.as_deref())?;
    let https = template.origin.scheme == Scheme::Https;
    if args.cacert.is_some() && !https {
        warn!("--cacert is used only with an https:// URL");
    }
    // The dry run shows the plan only; a missing CA store must not fail it.
    let tls = if https && !args.dry_run {
        Some(http::Tls(http::tls::config(args.cacert.as_deref())?))
    } else {
        None
    };
    Ok(Some(RequestConfig { template, tls }))
}

impl RequestConfig {
    /// What the supervision flags mean with `--url`: a finite timeout and
    /// cap by default, and no grace period (a request is ended at once,
    /// there is no process to ask first).
    pub fn apply(&self, opts: &mut Options) {
        opts.timeout = opts.timeout.or(Some(DEFAULT_TIMEOUT));
        opts.max_concurrent = opts.max_concurrent.or(NonZeroUsize::new(DEFAULT_CAP));
        opts.kill_after = Duration::ZERO;
        opts.tls = self.tls.clone();
    }
}
