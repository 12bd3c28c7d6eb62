//! Lease owners: the name a daemon leases jobs under, and whether another daemon of this host
//! is proven dead.
//!
//! An owner is `host:pid:s<start>-<boot>`: the host name, the process id, the process's start
//! time in clock ticks since boot (`/proc/PID/stat`, field 22) and the first eight characters
//! of the kernel's boot id. A process id alone is reused; with the start time and the boot id
//! it names one process for ever. An owner of this host whose process is gone, or whose pid
//! now belongs to a process that started at another time, is dead, and its leases can be
//! taken back at once ([`imgd_store::Store::reclaim_dead_owners`]). Owners of other hosts are
//! never judged here: their leases expire by time.

use std::sync::OnceLock;

static HOST: OnceLock<String> = OnceLock::new();

/// Names this host `name` instead of the kernel's node name (several daemons of one machine
/// that must count as different hosts, or a name more telling). Only before the first
/// [`host_name`]; returns whether it took.
pub fn set_host_name(name: &str) -> bool {
    HOST.set(name.trim().to_string()).is_ok()
}

/// This host's name: the one given to [`set_host_name`], else the kernel's node name.
pub fn host_name() -> &'static str {
    HOST.get_or_init(|| {
        let uname = rustix::system::uname();
        let name = uname.nodename().to_string_lossy().trim().to_string();
        if name.is_empty() {
            "localhost".to_string()
        } else {
            name
        }
    })
}

/// The first eight characters of the kernel's boot id (empty where `/proc` lacks it).
fn boot_id() -> &'static str {
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|id| id.trim().chars().take(8).collect())
            .unwrap_or_default()
    })
}

/// The start time of process `pid` in clock ticks since boot, from `/proc/PID/stat`; `None`
/// when no such process runs.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so split after the
    // last `)`. The field after it is field 3; the start time is field 22.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The lease owner name of this process (see the module docs).
pub fn lease_owner() -> String {
    let pid = std::process::id();
    let start = process_start_ticks(pid).unwrap_or(0);
    format!("{}:{pid}:s{start}-{}", host_name(), boot_id())
}

/// Whether `owner` is a daemon of this host that no longer runs. Owners of other hosts, and
/// names this function cannot read, are never called dead.
pub fn is_dead_here(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(tag), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if host != host_name() {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    let running = process_start_ticks(pid);
    match tag.strip_prefix('s').and_then(|t| t.split_once('-')) {
        Some((start, boot)) => {
            boot != boot_id() || running.is_none_or(|ticks| start.parse() != Ok(ticks))
        }
        // An owner name of an older imgd (`host:pid:nonce`): dead when its pid is gone.
        None => running.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_finished_one_is_dead() {
        let me = lease_owner();
        assert!(!is_dead_here(&me), "{me}");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = process_start_ticks(pid);
        let owner = format!(
            "{}:{pid}:s{}-{}",
            host_name(),
            start.unwrap_or(1),
            boot_id()
        );
        child.wait().unwrap();
        assert!(is_dead_here(&owner), "{owner}");
        // The same pid with another start time is another process.
        let reused = format!(
            "{}:{}:s{}-{}",
            host_name(),
            std::process::id(),
            process_start_ticks(std::process::id()).unwrap() + 1,
            boot_id()
        );
        assert!(is_dead_here(&reused));
        // Another boot: dead whatever the pid.
        let old_boot = me.replace(&format!("-{}", boot_id()), "-00000000");
        assert!(is_dead_here(&old_boot), "{old_boot}");
    }

    #[test]
    fn owners_of_other_hosts_and_unreadable_names_are_never_dead() {
        assert!(!is_dead_here("some-other-host:1:s1-abcdef01"));
        assert!(!is_dead_here("garbage"));
        assert!(!is_dead_here(&format!("{}:notapid:s1-x", host_name())));
    }
}
