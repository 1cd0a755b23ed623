//! Which container and Kubernetes pod a cgroup v2 path names, from the shapes the
//! container runtimes give their cgroups:
//!
//! | runtime | cgroup path (last components) |
//! | --- | --- |
//! | docker, systemd driver | `docker-<id>.scope` |
//! | docker, cgroupfs driver | `/docker/<id>` |
//! | containerd (CRI) | `cri-containerd-<id>.scope` |
//! | CRI-O | `crio-<id>.scope` |
//! | podman | `libpod-<id>.scope` (and `libpod-<id>.scope/container`) |
//! | kubelet, cgroupfs driver | `/kubepods[/burstable\|/besteffort]/pod<uid>/<id>` |
//! | kubelet, systemd driver | `kubepods[-burstable\|-besteffort]-pod<uid with _>.slice` |
//!
//! An id is 64 lowercase hex digits (what all of them use); the innermost
//! component that names one wins (a container inside a container is the inner
//! one). The runtimes' monitor processes (`crio-conmon-…`, `libpod-conmon-…`)
//! are no container's. The path comes from /proc of a process that may be
//! hostile: it is bounded where it is read, and only ids that validate here are
//! kept.

/// What a cgroup path says about containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    /// The container id, 64 hex digits.
    pub id: Option<String>,
    /// The runtime the path's shape names: docker, containerd, cri-o, podman.
    pub runtime: Option<&'static str>,
    /// The Kubernetes pod's uid, with dashes.
    pub pod_uid: Option<String>,
}

/// The scope prefixes of the runtimes' systemd units.
const SCOPES: &[(&str, &str)] = &[
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

fn is_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pod uid as the kubelet writes it in a path: a UUID (dashes, or `_` under
/// the systemd driver), or 32 hex digits for static pods.
fn pod_uid(s: &str) -> Option<String> {
    let uid = s.replace('_', "-");
    let hex = uid.bytes().filter(u8::is_ascii_hexdigit).count();
    let dashes = uid.bytes().filter(|&b| b == b'-').count();
    let ok =
        hex == 32 && hex + dashes == uid.len() && (dashes == 0 || (dashes == 4 && uid.len() == 36));
    ok.then(|| uid.to_ascii_lowercase())
}

/// The container of one path component, if it names one.
fn component(c: &str, parent: Option<&str>) -> Option<(String, Option<&'static str>)> {
    if let Some(unit) = c.strip_suffix(".scope") {
        for (prefix, runtime) in SCOPES {
            if let Some(id) = unit.strip_prefix(prefix) {
                return is_id(id).then(|| (id.to_string(), Some(*runtime)));
            }
        }
        return None;
    }
    if is_id(c) {
        let runtime = (parent == Some("docker")).then_some("docker");
        return Some((c.to_string(), runtime));
    }
    None
}

/// The pod uid of one path component, if it names one.
fn pod_component(c: &str) -> Option<String> {
    // systemd driver: kubepods-burstable-pod<uid>.slice, kubepods-pod<uid>.slice
    if let Some(slice) = c.strip_suffix(".slice") {
        if slice.starts_with("kubepods") {
            return slice.rsplit_once("-pod").and_then(|(_, uid)| pod_uid(uid));
        }
        return None;
    }
    // cgroupfs driver: pod<uid>
    c.strip_prefix("pod").and_then(pod_uid)
}

/// What `path`, a cgroup v2 path, says about containers and pods.
pub fn parse(path: &str) -> Container {
    let mut out = Container::default();
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let in_kubepods = parts.first().is_some_and(|c| c.starts_with("kubepods"));
    for (i, c) in parts.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| parts[p]);
        if let Some((id, runtime)) = component(c, parent) {
            out.id = Some(id);
            out.runtime = runtime;
            // a pod further out is not this container's unless it is its parent's
            out.pod_uid = None;
            if in_kubepods {
                out.pod_uid = parent.and_then(pod_component);
            }
        } else if in_kubepods && out.id.is_none() {
            if let Some(uid) = pod_component(c) {
                out.pod_uid = Some(uid);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2504e04f8911d39a0c0305e82c3301a0b1c2d3e4f5061728394a5b6c7d8e9f";
    const UID: &str = "0b0f4a12-9e3c-4b7a-8f2e-1c6d5e4f3a2b";

    fn c(id: Option<&str>, runtime: Option<&'static str>, pod: Option<&str>) -> Container {
        Container {
            id: id.map(str::to_string),
            runtime,
            pod_uid: pod.map(str::to_string),
        }
    }

    #[test]
    fn docker_under_either_driver() {
        assert_eq!(
            parse(&format!("/system.slice/docker-{ID}.scope")),
            c(Some(ID), Some("docker"), None)
        );
        assert_eq!(
            parse(&format!("/docker/{ID}")),
            c(Some(ID), Some("docker"), None)
        );
    }

    #[test]
    fn containerd_crio_and_podman_scopes() {
        assert_eq!(
            parse(&format!("/system.slice/cri-containerd-{ID}.scope")),
            c(Some(ID), Some("containerd"), None)
        );
        assert_eq!(
            parse(&format!("/machine.slice/crio-{ID}.scope")),
            c(Some(ID), Some("cri-o"), None)
        );
        assert_eq!(
            parse(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
            )),
            c(Some(ID), Some("podman"), None)
        );
        assert_eq!(
            parse(&format!("/machine.slice/libpod-{ID}.scope/container")),
            c(Some(ID), Some("podman"), None)
        );
    }

    #[test]
    fn kubepods_systemd_driver_burstable_besteffort_guaranteed() {
        let u = UID.replace('-', "_");
        assert_eq!(
            parse(&format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope")),
            c(Some(ID), Some("containerd"), Some(UID))
        );
        assert_eq!(
            parse(&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope")),
            c(Some(ID), Some("cri-o"), Some(UID))
        );
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-pod{u}.slice/docker-{ID}.scope"
            )),
            c(Some(ID), Some("docker"), Some(UID))
        );
    }

    #[test]
    fn kubepods_cgroupfs_driver() {
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{UID}/{ID}")),
            c(Some(ID), None, Some(UID))
        );
        assert_eq!(
            parse(&format!("/kubepods/besteffort/pod{UID}/{ID}")),
            c(Some(ID), None, Some(UID))
        );
        assert_eq!(
            parse(&format!("/kubepods/pod{UID}/{ID}")),
            c(Some(ID), None, Some(UID))
        );
        // a static pod's uid is a hash without dashes
        let hash = "6e5c7a1f2d3b4c5d6e7f8a9b0c1d2e3f";
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{hash}/{ID}")),
            c(Some(ID), None, Some(hash))
        );
        // the pod's own cgroup (the pause process's parent), no container yet
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{UID}")),
            c(None, None, Some(UID))
        );
    }

    #[test]
    fn the_innermost_container_wins() {
        let inner = "a".repeat(64);
        assert_eq!(
            parse(&format!("/system.slice/docker-{ID}.scope/docker/{inner}")),
            c(Some(&inner), Some("docker"), None)
        );
    }

    #[test]
    fn what_is_no_container() {
        for path in [
            "/",
            "/user.slice/user-1000.slice/session-3.scope",
            "/system.slice/docker.service",
            "/system.slice/containerd.service",
            "/init.scope",
            // monitors, not containers
            &format!("/machine.slice/crio-conmon-{ID}.scope"),
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            // ids that do not validate
            "/system.slice/docker-ABCDEF.scope",
            &format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
            &format!("/system.slice/docker-{ID}0.scope"),
            &format!("/docker/{}", &ID[..63]),
            &format!("/docker/{}", ID.replace('a', "g")),
        ] {
            assert_eq!(parse(path), Container::default(), "{path}");
        }
        // a pod-looking component outside kubepods is nothing
        assert_eq!(parse(&format!("/pod{UID}")), Container::default());
        // a bad uid is left out
        assert_eq!(parse("/kubepods/burstable/podnot-a-uid").pod_uid, None);
    }
}
