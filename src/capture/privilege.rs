//! Checks up front that this process may load BPF programs and open system-wide
//! perf events, so an unprivileged run is refused with one clear line instead of a
//! libbpf error halfway through.

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// Whether a process with these capabilities can profile: CAP_SYS_ADMIN alone, or
/// CAP_BPF with CAP_PERFMON.
fn sufficient(caps: u64) -> bool {
    has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON))
}

/// This process may not profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "profiling needs root, or the CAP_BPF and CAP_PERFMON capabilities \
     (running as uid {uid} without them)"
)]
pub struct NotPrivileged {
    /// The effective user id.
    pub uid: u32,
}

/// `Err` when this process lacks the privileges to profile.
pub fn check() -> Result<(), NotPrivileged> {
    let caps = effective_caps().unwrap_or(0);
    if sufficient(caps) {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    Err(NotPrivileged { uid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ffffffffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn root_or_bpf_plus_perfmon() {
        assert!(sufficient(1 << CAP_SYS_ADMIN));
        assert!(sufficient((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!sufficient(1 << CAP_BPF));
        assert!(!sufficient(1 << CAP_PERFMON));
        assert!(!sufficient(0));
    }
}
