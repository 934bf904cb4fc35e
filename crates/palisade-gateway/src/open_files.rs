//! The process's open-file limit (`RLIMIT_NOFILE`) against the
//! connections the gateway is set to hold.
//!
//! Every client connection is a file, and so is the upstream connection
//! a request in progress holds. Linux starts most processes at a soft
//! limit of 1 024 files (with a hard limit far above it), which holds
//! about 500 streams at once: past that, accepting a connection or
//! connecting to a provider fails with "too many open files" while
//! `gateway.max_connections` (default 10 000) says there is room. So the
//! binary raises its soft limit to the hard one at start-up
//! ([`raise_open_files_limit`], as Go's runtime and nginx's
//! `worker_rlimit_nofile` do), and a config whose `max_connections` the
//! limit cannot hold gets a warning (in
//! [`GatewayConfig::warnings`](crate::GatewayConfig::warnings), so both
//! the server's start-up and `check` say it).

/// The files `max_connections` client connections may need at once:
/// each with the upstream connection of its request. (The few the
/// process holds besides, its listener and the runtime's, are within
/// that "about".)
pub(crate) fn needed(max_connections: usize) -> u64 {
    (max_connections as u64).saturating_mul(2)
}

/// What to say when `limit` open files cannot hold `max_connections`
/// client connections (`None`: they fit).
pub(crate) fn shortfall(max_connections: usize, limit: u64) -> Option<String> {
    let needed = needed(max_connections);
    (limit < needed).then(|| {
        let fit = limit / 2;
        format!(
            "gateway.max_connections = {max_connections} needs about {needed} open files \
             (each connection and its upstream connection), but this process may open at most \
             {limit} (RLIMIT_NOFILE, hard limit): past about {fit} connections at once, new ones \
             fail with \"too many open files\". Raise the limit (ulimit -n, systemd \
             LimitNOFILE=, docker run --ulimit nofile=) or lower gateway.max_connections"
        )
    })
}

/// The open-file limits of this process: what it may open now (soft) and
/// how far it may raise that itself (hard); `u64::MAX` for no limit.
///
/// ```
/// let limits = palisade_gateway::open_files_limit();
/// assert!(limits.soft <= limits.hard);
/// ```
pub fn open_files_limit() -> OpenFilesLimit {
    #[cfg(unix)]
    {
        let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        OpenFilesLimit {
            soft: l.current.unwrap_or(u64::MAX),
            hard: l.maximum.unwrap_or(u64::MAX),
        }
    }
    #[cfg(not(unix))]
    {
        OpenFilesLimit {
            soft: u64::MAX,
            hard: u64::MAX,
        }
    }
}

/// A process's open-file limits (see [`open_files_limit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// How many files the process may have open now.
    pub soft: u64,
    /// How far the process may raise `soft` itself.
    pub hard: u64,
}

/// Raises this process's soft open-file limit to its hard one (capped at
/// 2^20 files when the hard limit is none), so that it may hold the
/// connections it is configured for; returns the limits before and
/// after. The `palisade-gateway` binary calls it at start-up; a library
/// user decides for their own process.
///
/// ```
/// let (before, after) = palisade_gateway::raise_open_files_limit().unwrap();
/// assert!(after.soft >= before.soft);
/// assert_eq!(after, palisade_gateway::open_files_limit());
/// ```
pub fn raise_open_files_limit() -> std::io::Result<(OpenFilesLimit, OpenFilesLimit)> {
    let before = open_files_limit();
    #[cfg(unix)]
    {
        let target = before.hard.min(1 << 20);
        if target > before.soft {
            rustix::process::setrlimit(
                rustix::process::Resource::Nofile,
                rustix::process::Rlimit {
                    current: Some(target),
                    maximum: (before.hard != u64::MAX).then_some(before.hard),
                },
            )?;
        }
    }
    Ok((before, open_files_limit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_that_holds_every_connection_and_its_upstream_says_nothing() {
        assert_eq!(needed(10_000), 20_000);
        assert_eq!(shortfall(10_000, 20_000), None);
        assert_eq!(shortfall(10_000, u64::MAX), None);
        assert_eq!(shortfall(0, 0), None);
    }

    #[test]
    fn a_limit_one_short_names_the_key_the_limit_and_what_fits() {
        let w = shortfall(10_000, 19_999).unwrap();
        assert!(
            w.starts_with("gateway.max_connections = 10000 needs about 20000"),
            "{w}"
        );
        assert!(w.contains("at most 19999"), "{w}");
        assert!(w.contains("past about 9999 connections"), "{w}");
        let w = shortfall(10_000, 1_024).unwrap();
        assert!(w.contains("at most 1024"), "{w}");
        assert!(w.contains("past about 512 connections"), "{w}");
        assert!(w.contains("ulimit -n"), "{w}");
    }

    #[test]
    fn needed_does_not_overflow() {
        assert_eq!(needed(usize::MAX), u64::MAX);
    }
}
