//! Labels: string key-value pairs on samples, so a backend can split a profile
//! by host, service, container or pod.
//!
//! A [`crate::Profile`] holds the labels of the whole profile (the host, the
//! user's `--label`s) and each process's own (its executable, cgroup, container,
//! service); a sample carries both, the process's winning on a shared key. pprof
//! writes them as string labels of every sample, and reading a pprof file puts
//! them back per process, so an exporter reading the store finds them either way.
//! Key names are OpenTelemetry's resource attributes with `_` for `.`, which
//! Prometheus-style backends (Pyroscope) accept as label names.

use std::collections::BTreeMap;

/// Key-value pairs, in the order they are written; keys are unique.
pub type Labels = Vec<(String, String)>;

/// The service a sample belongs to: the executable's name unless set.
pub const SERVICE_NAME: &str = "service_name";
/// The machine's host name.
pub const HOST_NAME: &str = "host_name";
/// The process's executable.
pub const EXECUTABLE_PATH: &str = "process_executable_path";
/// The GNU build id of the process's executable, in hex.
pub const EXECUTABLE_BUILD_ID: &str = "process_executable_build_id_gnu";
/// The process's cgroup v2 path.
pub const CGROUP: &str = "process_linux_cgroup";
/// The container id its cgroup path names.
pub const CONTAINER_ID: &str = "container_id";
/// The runtime that named it: docker, containerd, cri-o, podman.
pub const CONTAINER_RUNTIME: &str = "container_runtime";
/// The Kubernetes pod uid its cgroup path names.
pub const POD_UID: &str = "k8s_pod_uid";

/// The keys pprof writes as numeric labels or as the thread's name, which no
/// string label may take.
pub const RESERVED: &[&str] = &["pid", "tid", "comm"];

/// The value of `key` in `labels`.
pub fn get<'a>(labels: &'a Labels, key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Sets `key` to `value`, replacing an earlier value.
pub fn set(labels: &mut Labels, key: &str, value: impl Into<String>) {
    let value = value.into();
    match labels.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => labels.push((key.to_string(), value)),
    }
}

/// The labels of a sample of `pid`: the profile's, then the process's, the
/// process's value winning on a key both have.
pub fn of_sample<'a>(
    profile_labels: &'a Labels,
    process_labels: &'a BTreeMap<u32, Labels>,
    pid: u32,
) -> Vec<(&'a str, &'a str)> {
    let own = process_labels.get(&pid);
    let mut out: Vec<(&str, &str)> = profile_labels
        .iter()
        .filter(|(k, _)| own.is_none_or(|o| get(o, k).is_none()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(own) = own {
        out.extend(own.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_label_wins_over_the_profiles() {
        let profile = vec![
            (HOST_NAME.to_string(), "h".to_string()),
            (SERVICE_NAME.to_string(), "all".to_string()),
        ];
        let mut per = BTreeMap::new();
        let mut own = Labels::new();
        set(&mut own, SERVICE_NAME, "web");
        set(&mut own, SERVICE_NAME, "api");
        per.insert(7, own);
        assert_eq!(
            of_sample(&profile, &per, 7),
            [(HOST_NAME, "h"), (SERVICE_NAME, "api")]
        );
        assert_eq!(
            of_sample(&profile, &per, 8),
            [(HOST_NAME, "h"), (SERVICE_NAME, "all")]
        );
    }
}
