//! The labels of samples: the host, the user's `--label KEY=VALUE`s, and each
//! process's executable, build id, cgroup, container and pod, with the
//! `service_name` a backend splits profiles by (see [`flamegraphs::labels`] for the
//! keys and how pprof carries them).
//!
//! `service_name` is, first match wins: the first `--label-rule` whose pattern
//! matches the process; `--label service_name=…`; the executable's file name;
//! the process's command name.
//!
//! The settings are made once, from the command line, before sampling starts, and
//! read by whichever thread names a window: they live in a process-wide cell
//! rather than being threaded through every layer between the two.

use std::sync::OnceLock;

use flamegraphs::labels::{self as keys, Labels};
use symbolizer::processes::ProcessInfo;

pub mod container;
mod rules;

pub use rules::Rule;

/// The most `--label`s and `--label-rule`s, each.
pub const MAX_LABELS: usize = 32;
/// The longest label key.
pub const MAX_KEY: usize = 64;
/// The longest label value (a service name, a team).
pub const MAX_VALUE: usize = 256;

/// The labels settings of a run.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Labels every sample carries (the host name, then `--label`s), without
    /// `service_name`.
    pub common: Labels,
    /// `--label service_name=…`, if given.
    pub service_name: Option<String>,
    /// `--label-rule`s, in order.
    pub rules: Vec<Rule>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Sets the run's labels; the first call wins (one run per process).
pub fn configure(config: Config) {
    let _ = CONFIG.set(config);
}

/// The run's labels: the host name only until [`configure`] is called.
pub fn config() -> &'static Config {
    CONFIG.get_or_init(|| Config {
        common: host_labels(),
        ..Config::default()
    })
}

/// The host name, from the kernel (bounded: a UTS name is at most 64 bytes).
pub fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..end])
        .ok()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

fn host_labels() -> Labels {
    host_name()
        .map(|h| vec![(keys::HOST_NAME.to_string(), h)])
        .unwrap_or_default()
}

/// Builds the settings from `--label KEY=VALUE` and `--label-rule` arguments;
/// the error is one line naming the bad argument.
pub fn from_args(labels: &[String], rules: &[String]) -> Result<Config, String> {
    if labels.len() > MAX_LABELS || rules.len() > MAX_LABELS {
        return Err(format!(
            "at most {MAX_LABELS} --label and {MAX_LABELS} --label-rule options"
        ));
    }
    let mut config = Config {
        common: host_labels(),
        ..Config::default()
    };
    for arg in labels {
        let (key, value) = parse_label(arg)?;
        if key == keys::SERVICE_NAME {
            config.service_name = Some(value);
        } else {
            keys::set(&mut config.common, &key, value);
        }
    }
    config.rules = rules
        .iter()
        .map(|r| Rule::parse(r))
        .collect::<Result<_, _>>()?;
    Ok(config)
}

/// Whether `key` may name a label: a Prometheus label name (what Pyroscope
/// accepts), not reserved (`__…`, pid, tid, comm), at most [`MAX_KEY`] bytes.
fn check_key(key: &str) -> Result<(), String> {
    let mut bytes = key.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "label key {key:?}: letters, digits and _ only, not starting with a digit"
        ));
    }
    if key.len() > MAX_KEY {
        return Err(format!("label key {key:?}: longer than {MAX_KEY} bytes"));
    }
    if key.starts_with("__") || keys::RESERVED.contains(&key) {
        return Err(format!(
            "label key {key:?} is reserved (pid, tid, comm, and keys starting with __)"
        ));
    }
    Ok(())
}

/// Whether `value` may be a label value: 1 to [`MAX_VALUE`] bytes, no control
/// characters.
pub(crate) fn check_value(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_VALUE {
        return Err(format!("{what}: the value must be 1 to {MAX_VALUE} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{what}: the value has control characters"));
    }
    Ok(())
}

/// `KEY=VALUE`, validated.
fn parse_label(arg: &str) -> Result<(String, String), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("--label {arg:?}: expected KEY=VALUE"))?;
    check_key(key).map_err(|e| format!("--label {arg:?}: {e}"))?;
    check_value(&format!("--label {key}"), value)?;
    Ok((key.to_string(), value.to_string()))
}

/// A process's own labels: `pid`'s facts (when they were captured) and the
/// command name its samples carry, under `config`.
pub fn of_process(config: &Config, info: Option<&ProcessInfo>, comm: &str) -> Labels {
    let mut out = Labels::new();
    let comm = info.and_then(|i| i.comm.as_deref()).unwrap_or(comm);
    let exe = info.and_then(|i| i.exe.as_deref());
    let cgroup = info.and_then(|i| i.cgroup.as_deref());
    let service = config
        .rules
        .iter()
        .find(|r| r.matches(comm, exe, cgroup))
        .map(|r| r.service.clone())
        .or_else(|| config.service_name.clone())
        .or_else(|| exe.and_then(|e| e.rsplit('/').next()).map(str::to_string))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| comm.to_string());
    out.push((keys::SERVICE_NAME.to_string(), service));
    if let Some(exe) = exe {
        out.push((keys::EXECUTABLE_PATH.to_string(), exe.to_string()));
    }
    if let Some(id) = info.and_then(|i| i.exe_build_id.as_deref()) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        out.push((keys::EXECUTABLE_BUILD_ID.to_string(), hex));
    }
    if let Some(cgroup) = cgroup {
        out.push((keys::CGROUP.to_string(), cgroup.to_string()));
        let c = container::parse(cgroup);
        if let Some(id) = c.id {
            out.push((keys::CONTAINER_ID.to_string(), id));
        }
        if let Some(runtime) = c.runtime {
            out.push((keys::CONTAINER_RUNTIME.to_string(), runtime.to_string()));
        }
        if let Some(uid) = c.pod_uid {
            out.push((keys::POD_UID.to_string(), uid));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_validated() {
        for bad in [
            "novalue",
            "=x",
            "1abc=x",
            "a-b=x",
            "a.b=x",
            "pid=3",
            "comm=x",
            "__name__=x",
            "k=",
            "k=a\nb",
        ] {
            assert!(from_args(&[bad.into()], &[]).is_err(), "{bad}");
        }
        let long_key = format!("{}=x", "k".repeat(MAX_KEY + 1));
        assert!(from_args(&[long_key], &[]).is_err());
        let long_value = format!("k={}", "v".repeat(MAX_VALUE + 1));
        assert!(from_args(&[long_value], &[]).is_err());
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i}=v")).collect();
        assert!(from_args(&many, &[]).is_err());
        let c = from_args(&["team=db".into(), "service_name=pg".into()], &[]).unwrap();
        assert_eq!(keys::get(&c.common, "team"), Some("db"));
        assert_eq!(c.service_name.as_deref(), Some("pg"));
        assert_eq!(keys::get(&c.common, keys::SERVICE_NAME), None);
    }

    fn info(exe: &str, cgroup: &str) -> ProcessInfo {
        ProcessInfo {
            exe: Some(exe.into()),
            comm: Some("worker".into()),
            cgroup: Some(cgroup.into()),
            exe_build_id: Some(vec![0xab, 0x01]),
        }
    }

    #[test]
    fn a_process_gets_its_container_and_service() {
        let id = "f".repeat(64);
        let p = info(
            "/usr/bin/redis-server",
            &format!("/system.slice/docker-{id}.scope"),
        );
        let l = of_process(&Config::default(), Some(&p), "redis-server");
        assert_eq!(keys::get(&l, keys::SERVICE_NAME), Some("redis-server"));
        assert_eq!(keys::get(&l, keys::CONTAINER_ID), Some(id.as_str()));
        assert_eq!(keys::get(&l, keys::CONTAINER_RUNTIME), Some("docker"));
        assert_eq!(keys::get(&l, keys::EXECUTABLE_BUILD_ID), Some("ab01"));
        assert_eq!(keys::get(&l, keys::POD_UID), None);
    }

    #[test]
    fn service_name_precedence() {
        let p = info("/usr/bin/python3", "/system.slice/api.service");
        let mut c = Config {
            service_name: Some("fleet".into()),
            ..Config::default()
        };
        assert_eq!(
            keys::get(&of_process(&c, Some(&p), "x"), keys::SERVICE_NAME),
            Some("fleet")
        );
        c.rules = vec![Rule::parse("cgroup:*/api.service=api").unwrap()];
        assert_eq!(
            keys::get(&of_process(&c, Some(&p), "x"), keys::SERVICE_NAME),
            Some("api")
        );
        // a kernel thread: no executable, its command name
        let l = of_process(&Config::default(), None, "kworker/0:1");
        assert_eq!(keys::get(&l, keys::SERVICE_NAME), Some("kworker/0:1"));
    }
}
