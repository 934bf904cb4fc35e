//! A connect that failed for want of this process's own resources: no
//! file left for the socket (`EMFILE`, or the system's table full,
//! `ENFILE`), or no kernel buffer for it (`ENOBUFS`).
//!
//! Such a connect never reached the upstream, so it is a refusal
//! ([`RejectReason::OutOfResources`]), not a failure of the provider: the
//! provider's breaker and outlier detection do not count it, the chain
//! moves on (another provider may have an idle connection to use), and
//! when no provider answers the caller gets a 503 with `Retry-After`
//! rather than a 502 saying that every provider failed.

use std::time::Duration;

use http::Uri;
use palisade_core::{BoxError, RejectReason, Rejected};

/// How soon a call refused for want of files is worth trying again:
/// requests in flight end and free theirs within about that.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// `err` (a connect to `origin` that failed) as a [`Rejected`] when the
/// process was out of resources for it, else unchanged.
pub(crate) fn refuse_if_exhausted(err: BoxError, origin: &Uri) -> BoxError {
    let cause = std::iter::successors(Some(&*err as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .take(32)
    .find_map(|e| e.downcast_ref::<std::io::Error>())
    .filter(|io| is_exhausted(io));
    match cause {
        Some(io) => {
            let detail = format!("connecting to {origin}: {io}");
            Rejected::new(RejectReason::OutOfResources)
                .with_detail(detail)
                .with_retry_after(RETRY_AFTER)
                .into()
        }
        None => err,
    }
}

/// Whether `io` says the process (or the system) had no file or buffer
/// left for a socket.
#[cfg(unix)]
fn is_exhausted(io: &std::io::Error) -> bool {
    use rustix::io::Errno;
    io.raw_os_error().is_some_and(|code| {
        [Errno::MFILE, Errno::NFILE, Errno::NOBUFS]
            .iter()
            .any(|e| e.raw_os_error() == code)
    })
}

/// Whether `io` says the process had no socket left (`WSAEMFILE`,
/// `WSAENOBUFS`).
#[cfg(not(unix))]
fn is_exhausted(io: &std::io::Error) -> bool {
    matches!(io.raw_os_error(), Some(10024 | 10055))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use palisade_core::{classify_error, FailureKind};

    /// An error wrapping `cause`, as hyper-util's connect error does.
    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("tcp open error")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn origin() -> Uri {
        Uri::from_static("http://127.0.0.1:9/")
    }

    #[test]
    fn out_of_files_is_a_refusal_naming_the_cause() {
        for errno in [rustix::io::Errno::MFILE, rustix::io::Errno::NFILE] {
            let io = std::io::Error::from_raw_os_error(errno.raw_os_error());
            let err = refuse_if_exhausted(Box::new(Wrapper(io)), &origin());
            let rejected = err.downcast_ref::<Rejected>().expect("a refusal");
            assert_eq!(rejected.reason(), RejectReason::OutOfResources);
            assert_eq!(rejected.retry_after(), Some(RETRY_AFTER));
            assert_eq!(rejected.http_status(), 503);
            let detail = rejected.detail().unwrap();
            assert!(
                detail.starts_with("connecting to http://127.0.0.1:9/: "),
                "{detail}"
            );
            assert!(
                detail.contains("open files") || detail.contains("file table"),
                "{detail}"
            );
            assert_eq!(
                classify_error(&*err).kind,
                FailureKind::Rejected(RejectReason::OutOfResources)
            );
        }
    }

    #[test]
    fn other_connect_errors_are_left_as_they_are() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = refuse_if_exhausted(Box::new(Wrapper(refused)), &origin());
        assert!(err.downcast_ref::<Rejected>().is_none());
        assert_eq!(err.to_string(), "tcp open error");
        assert_eq!(classify_error(&*err).kind, FailureKind::Connect);
        let access = std::io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error());
        let err = refuse_if_exhausted(Box::new(Wrapper(access)), &origin());
        assert!(err.downcast_ref::<Rejected>().is_none());
    }
}
