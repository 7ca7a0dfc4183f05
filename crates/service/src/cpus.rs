//! Pinning a service process to CPUs (`--cpus`).
//!
//! An embedded (SQLite) service hands every statement to its connection's own thread and waits
//! for the answer. When the two threads sit on different cores, each hand-off wakes the other
//! core (an inter-processor interrupt, costly on a virtual machine); when they share one, the
//! woken thread simply runs next. `oa up` therefore gives each service of the embedded suite one
//! CPU of its own or shared with lighter services; on 2 cores this measured about half again as
//! many payments a second (BENCHMARKS.md). Linux only: elsewhere [`pin_process`] answers
//! [`CpuError::Unsupported`].

use std::{collections::BTreeSet, fmt, str::FromStr};

/// Highest CPU number accepted (Linux's default `CPU_SETSIZE` is 1024).
pub const MAX_CPU: usize = 1023;

/// A set of CPU numbers, written as Linux writes them (`0`, `0,2`, `0-3,6`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(BTreeSet<usize>);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CpuError {
    #[error("bad CPU list {0:?}: expected numbers and ranges such as 0,2-3")]
    Syntax(String),
    #[error("CPU {0} is above the highest accepted ({MAX_CPU})")]
    TooHigh(usize),
    #[error("CPU {0} is not one this process may run on (allowed: {1})")]
    NotAllowed(usize, CpuList),
    #[error("pinning to CPUs is not supported on this platform")]
    Unsupported,
    #[error("cannot read which CPUs this process may run on: {0}")]
    Read(String),
    #[error("cannot pin thread {0}: {1}")]
    Pin(i32, String),
}

impl CpuList {
    pub fn new(cpus: impl IntoIterator<Item = usize>) -> Result<Self, CpuError> {
        let set: BTreeSet<usize> = cpus.into_iter().collect();
        if set.is_empty() {
            return Err(CpuError::Syntax(String::new()));
        }
        if let Some(&high) = set.iter().find(|&&c| c > MAX_CPU) {
            return Err(CpuError::TooHigh(high));
        }
        Ok(Self(set))
    }

    /// The CPUs, lowest first (never none: a list holds at least one).
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }
}

impl FromStr for CpuList {
    type Err = CpuError;

    fn from_str(s: &str) -> Result<Self, CpuError> {
        let bad = || CpuError::Syntax(s.chars().take(64).collect());
        let number = |n: &str| -> Result<usize, CpuError> {
            if n.is_empty() || n.len() > 4 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let n: usize = n.parse().map_err(|_| bad())?;
            if n > MAX_CPU {
                return Err(CpuError::TooHigh(n));
            }
            Ok(n)
        };
        let mut cpus = BTreeSet::new();
        for part in s.split(',') {
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (number(lo)?, number(hi)?);
                    if lo > hi {
                        return Err(bad());
                    }
                    cpus.extend(lo..=hi);
                }
                None => {
                    cpus.insert(number(part)?);
                }
            }
        }
        Self::new(cpus).map_err(|e| match e {
            CpuError::Syntax(_) => bad(),
            other => other,
        })
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cpus = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(lo) = cpus.next() {
            let mut hi = lo;
            while cpus.peek() == Some(&(hi + 1)) {
                hi += 1;
                cpus.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if hi == lo {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// The CPUs this process may run on, in order.
#[cfg(target_os = "linux")]
pub fn allowed() -> Result<CpuList, CpuError> {
    use nix::{sched::sched_getaffinity, unistd::Pid};
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(|e| CpuError::Read(e.to_string()))?;
    let cpus =
        (0..nix::sched::CpuSet::count().min(MAX_CPU + 1)).filter(|&c| set.is_set(c) == Ok(true));
    CpuList::new(cpus)
}

#[cfg(not(target_os = "linux"))]
pub fn allowed() -> Result<CpuList, CpuError> {
    Err(CpuError::Unsupported)
}

/// Pins every thread of this process to `cpus`; threads started afterwards inherit the pin from
/// the thread that starts them. Call it early (before connecting to the database, whose threads
/// then start pinned). Every CPU must be one the process may run on now.
#[cfg(target_os = "linux")]
pub fn pin_process(cpus: &CpuList) -> Result<(), CpuError> {
    use nix::{
        sched::{CpuSet, sched_setaffinity},
        unistd::Pid,
    };
    let allowed = allowed()?;
    if let Some(cpu) = cpus.iter().find(|c| !allowed.0.contains(c)) {
        return Err(CpuError::NotAllowed(cpu, allowed));
    }
    let mut set = CpuSet::new();
    for cpu in cpus.iter() {
        set.set(cpu).map_err(|_| CpuError::TooHigh(cpu))?;
    }
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| CpuError::Read(e.to_string()))?;
    for task in tasks {
        let task = task.map_err(|e| CpuError::Read(e.to_string()))?;
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            Ok(()) => {}
            // The thread ended since the directory was read.
            Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(CpuError::Pin(tid, e.to_string())),
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn pin_process(_cpus: &CpuList) -> Result<(), CpuError> {
    Err(CpuError::Unsupported)
}

/// Spreads processes over `cpus`, heaviest first, each to the CPU with the least weight so far
/// (the lowest-numbered on a tie). `weights[i]` is process i's expected share of the work; the
/// answer is one CPU per process, in the same order.
pub fn spread(weights: &[u32], cpus: &CpuList) -> Vec<usize> {
    let cpus: Vec<usize> = cpus.iter().collect();
    let mut load = vec![0u64; cpus.len()];
    let mut order: Vec<usize> = (0..weights.len()).collect();
    // Stable: equal weights keep their order.
    order.sort_by(|&a, &b| weights[b].cmp(&weights[a]));
    let mut out = vec![cpus.first().copied().unwrap_or(0); weights.len()];
    for i in order {
        let Some((slot, _)) = load.iter().enumerate().min_by_key(|&(slot, l)| (*l, slot)) else {
            break;
        };
        load[slot] += u64::from(weights[i]);
        out[i] = cpus[slot];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_print_as_linux_writes_them() {
        for (text, cpus, printed) in [
            ("0", vec![0], "0"),
            ("3,1", vec![1, 3], "1,3"),
            ("0-3,6", vec![0, 1, 2, 3, 6], "0-3,6"),
            ("2-2,1", vec![1, 2], "1-2"),
            ("1023", vec![1023], "1023"),
        ] {
            let list: CpuList = text.parse().unwrap();
            assert_eq!(list.iter().collect::<Vec<_>>(), cpus, "{text}");
            assert_eq!(list.to_string(), printed);
            assert_eq!(printed.parse::<CpuList>().unwrap(), list);
        }
    }

    #[test]
    fn bad_lists_are_refused_with_their_reason() {
        for bad in [
            "", ",", "a", "1,", "-1", "3-1", "1-", "0x1", " 1", "1.0", "99999",
        ] {
            assert!(
                matches!(bad.parse::<CpuList>(), Err(CpuError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert_eq!("1024".parse::<CpuList>(), Err(CpuError::TooHigh(1024)));
        assert_eq!("0-1024".parse::<CpuList>(), Err(CpuError::TooHigh(1024)));
    }

    #[test]
    fn spread_puts_the_heaviest_alone_first_and_fills_the_lightest_cpu() {
        let two: CpuList = "0-1".parse().unwrap();
        // treasury, hydra, wallet-executor, aegis, lightning-ops.
        assert_eq!(spread(&[4, 3, 2, 1, 1], &two), vec![0, 1, 1, 0, 0]);
        let four: CpuList = "2,4-6".parse().unwrap();
        assert_eq!(spread(&[4, 3, 2, 1, 1], &four), vec![2, 4, 5, 6, 6]);
        let one: CpuList = "7".parse().unwrap();
        assert_eq!(spread(&[1, 5], &one), vec![7, 7]);
        assert!(spread(&[], &two).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_cpu_the_process_may_not_use_is_refused_and_nothing_changes() {
        let before = allowed().unwrap();
        let outside = (0..=MAX_CPU).find(|c| !before.0.contains(c)).unwrap();
        let list = CpuList::new([outside]).unwrap();
        assert_eq!(
            pin_process(&list),
            Err(CpuError::NotAllowed(outside, before.clone()))
        );
        assert_eq!(allowed().unwrap(), before);
    }
}
