//! What a process and the machine spent over a stretch of time, read from
//! Linux's `/proc`: the process's CPU time (all its threads, in ns), the
//! time the machine's host kept its virtual CPUs waiting (steal), and the
//! interrupts one CPU sent another to run something it woke there.
//!
//! On a virtual machine whose idle CPUs halt, a request that hops between
//! processes pays the host for each wake-up of a halted CPU, and that,
//! more than the work a target does, sets its throughput on one
//! connection. These readings tell the two apart: the target's own CPU
//! time a request, and how much the host and the wake-ups weighed while
//! it ran.
//!
//! ```
//! let before = benches::machine::Usage::read(Some(std::process::id()));
//! let spent = benches::machine::Usage::read(Some(std::process::id())).since(&before);
//! assert!(spent.steal_share() <= 1.0);
//! ```

/// One reading of the machine and, when asked, of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// The process's threads' time on a CPU, ns (`/proc/PID/task/*/schedstat`).
    pub cpu_ns: Option<u64>,
    /// Every CPU's time, in clock ticks, all states summed (`/proc/stat`).
    pub ticks: u64,
    /// Of which stolen by the host: a virtual CPU ready to run, not run.
    pub steal: u64,
    /// Function-call interrupts, every CPU's (`/proc/interrupts`, `CAL`):
    /// one CPU asking another to run a task it woke there.
    pub ipis: u64,
}

impl Usage {
    /// Reads the machine now, and `pid`'s CPU time when given (`None`
    /// when it cannot be read: the process is gone, or this is not Linux).
    pub fn read(pid: Option<u32>) -> Usage {
        let (ticks, steal) = stat();
        Usage {
            cpu_ns: pid.and_then(cpu_ns),
            ticks,
            steal,
            ipis: ipis(),
        }
    }

    /// What was spent between `before` and this reading.
    pub fn since(&self, before: &Usage) -> Usage {
        Usage {
            cpu_ns: match (self.cpu_ns, before.cpu_ns) {
                (Some(now), Some(then)) => Some(now.saturating_sub(then)),
                _ => None,
            },
            ticks: self.ticks.saturating_sub(before.ticks),
            steal: self.steal.saturating_sub(before.steal),
            ipis: self.ipis.saturating_sub(before.ipis),
        }
    }

    /// Two stretches as one (a process's CPU time only if both have it).
    pub fn add(&self, other: &Usage) -> Usage {
        Usage {
            cpu_ns: self.cpu_ns.zip(other.cpu_ns).map(|(a, b)| a + b),
            ticks: self.ticks + other.ticks,
            steal: self.steal + other.steal,
            ipis: self.ipis + other.ipis,
        }
    }

    /// The share of the machine's CPU time the host took, 0 to 1.
    pub fn steal_share(&self) -> f64 {
        if self.ticks == 0 {
            0.0
        } else {
            self.steal as f64 / self.ticks as f64
        }
    }
}

/// Every CPU's ticks summed, and the stolen ones: `/proc/stat`'s `cpu`
/// line (user nice system idle iowait irq softirq steal ...); zeros when
/// unreadable.
fn stat() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let fields: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    (fields.iter().sum(), fields.get(7).copied().unwrap_or(0))
}

/// The `CAL` row of `/proc/interrupts` summed over the CPUs; 0 when
/// unreadable.
fn ipis() -> u64 {
    let text = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("CAL:"))
        .map(|counts| {
            counts
                .split_ascii_whitespace()
                .map_while(|c| c.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// The time each of `pid`'s threads has run, summed: the first field of
/// each `/proc/PID/task/TID/schedstat`, in ns. A thread that ends while
/// they are read is left out; `None` when the process is gone.
fn cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for tid in threads(&pid.to_string()).ok()? {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")) else {
            continue;
        };
        total += text
            .split_ascii_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// The ids of `process`'s threads, from `/proc/PROCESS/task` (`"self"`
/// for this one's); an entry that cannot be read is left out.
///
/// ```
/// let mine = benches::machine::threads("self").unwrap();
/// assert!(!mine.is_empty());
/// ```
pub fn threads(process: &str) -> std::io::Result<Vec<u32>> {
    Ok(std::fs::read_dir(format!("/proc/{process}/task"))?
        .flatten()
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_process_is_seen_spending() {
        let pid = Some(std::process::id());
        let before = Usage::read(pid);
        assert!(before.cpu_ns.is_some(), "this process's schedstat");
        // Work until this process's reading has grown by 5 ms of CPU
        // time; a reading that does not grow never gets there.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            let spent = Usage::read(pid).since(&before);
            if spent.cpu_ns.unwrap() >= 5_000_000 {
                assert!(spent.steal <= spent.ticks);
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "CPU time read as {:?} after 30 s of work",
                spent.cpu_ns
            );
        }
        assert!(Usage::read(Some(u32::MAX)).cpu_ns.is_none());
    }

    #[test]
    fn stretches_add_and_share() {
        let a = Usage {
            cpu_ns: Some(5),
            ticks: 100,
            steal: 10,
            ipis: 3,
        };
        let b = Usage {
            cpu_ns: None,
            ticks: 100,
            steal: 30,
            ipis: 1,
        };
        let both = a.add(&b);
        assert_eq!(both.cpu_ns, None);
        assert_eq!((both.ticks, both.steal, both.ipis), (200, 40, 4));
        assert!((both.steal_share() - 0.2).abs() < 1e-9);
        assert_eq!(Usage::default().steal_share(), 0.0);
        let later = Usage {
            cpu_ns: Some(9),
            ticks: 150,
            steal: 12,
            ipis: 7,
        };
        let d = later.since(&a);
        assert_eq!((d.cpu_ns, d.ticks, d.steal, d.ipis), (Some(4), 50, 2, 4));
    }
}
