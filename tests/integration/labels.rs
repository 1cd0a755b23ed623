//! Labels and mappings in pprof output (issue 14): a process in a cgroup shaped
//! like a container runtime's gets that container's id (and its host, pid, comm,
//! executable, build id and service) on its samples in the store, in a `record`
//! pprof and after `query`; the mappings carry real address ranges and build ids
//! that `go tool pprof` reads; bad `--label`s are refused before sampling.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{
    capture_lock, flamebpf, go_pprof, require_bpf, run, stripped_workload, windows, workload,
};

const CONTAINER_ID: &str = "5e2b8f0a9c1d4e3f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f";

/// The cgroup v2 hierarchy, wherever this machine mounts it (/sys/fs/cgroup, or
/// /sys/fs/cgroup/unified on a hybrid systemd).
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
}

/// A cgroup named like docker's systemd scope, removed when dropped (its
/// processes have exited by then).
struct ContainerCgroup {
    path: PathBuf,
    made_parent: Option<PathBuf>,
}

impl ContainerCgroup {
    /// `system.slice/docker-<id>.scope` under the v2 root; `Err` says why not.
    fn create() -> Result<ContainerCgroup, String> {
        let root = cgroup2_root().ok_or("no cgroup v2 hierarchy is mounted")?;
        let parent = root.join("system.slice");
        let made_parent = (!parent.exists()).then(|| parent.clone());
        std::fs::create_dir_all(&parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let path = parent.join(format!("docker-{CONTAINER_ID}.scope"));
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
        Ok(ContainerCgroup { path, made_parent })
    }

    /// The cgroup path as /proc/PID/cgroup shows it.
    fn name(&self) -> String {
        format!("/system.slice/docker-{CONTAINER_ID}.scope")
    }

    /// `sh -c` that moves itself into the cgroup, then execs `program ARGS`: a
    /// container runtime's order.
    fn run_inside(&self, program: &Path, args: &str) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "echo $$ > {}/cgroup.procs && exec {} {args}",
                self.path.display(),
                program.display()
            ),
        ]
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        // a cgroup is removed once empty; its last process may still be exiting
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if let Some(p) = &self.made_parent {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// The GNU build id of `path`, in hex, as binutils reads it.
fn build_id(path: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(path)
        .output()
        .expect("readelf runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("the workload has a build id")
        .to_string()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// The labels of the samples of the process running `exe` in a pprof file.
fn labels_of(pprof: &Path, exe: &Path) -> (u32, Vec<(String, String)>) {
    let profile = flamegraphs::pprof::read(&std::fs::read(pprof).unwrap()).unwrap();
    let exe = exe.to_str().unwrap();
    let (&pid, _) = profile
        .process_labels
        .iter()
        .find(|(_, l)| flamegraphs::labels::get(l, "process_executable_path") == Some(exe))
        .unwrap_or_else(|| panic!("a process of {exe} in {:?}", profile.process_labels));
    assert!(
        profile.samples.iter().any(|s| s.pid == pid),
        "its samples are there"
    );
    let all = profile
        .sample_labels(pid)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (pid, all)
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The `go tool pprof -raw` mapping line of `exe`: (start, limit, offset, build id).
fn raw_mapping(raw: &str, exe: &Path) -> (u64, u64, u64, String) {
    let section = raw.split("Mappings").nth(1).expect("-raw lists mappings");
    let line = section
        .lines()
        .find(|l| l.contains(&format!(" {} ", exe.display())))
        .unwrap_or_else(|| panic!("a mapping of {}: {section}", exe.display()));
    // "1: 0x562c…/0x562c…/0x1000 /path buildid [FN]…"
    let fields: Vec<&str> = line.split_whitespace().collect();
    let range: Vec<u64> = fields[1]
        .split('/')
        .map(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).unwrap())
        .collect();
    (range[0], range[1], range[2], fields[3].to_string())
}

fn check_mapping(raw: &str, exe: &Path) {
    let (start, limit, offset, id) = raw_mapping(raw, exe);
    assert_eq!(id, build_id(exe), "the mapping has the binary's build id");
    assert!(
        start > 0 && start < limit && limit < u64::MAX && limit - start < 1 << 30,
        "a real address range, not the whole space: {start:#x}-{limit:#x}"
    );
    assert_eq!(offset % 4096, 0, "a page-aligned file offset: {offset:#x}");
}

#[test]
fn a_process_in_a_docker_shaped_cgroup_gets_its_container_id_in_the_store() {
    require_bpf!();
    let cg = match ContainerCgroup::create() {
        Ok(cg) => cg,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let _lock = capture_lock();
    let command = cg.run_inside(&split, "2");
    let mut args = vec![
        "-F",
        "99",
        "--window",
        "60",
        "--label",
        "team=storage",
        "--label-rule",
        "cgroup:*/docker-*.scope=containerized",
        "--dir",
        store.to_str().unwrap(),
        "--",
    ];
    args.extend(command.iter().map(String::as_str));
    // the daemon ends when the command does, and writes its last window
    let out = run(flamebpf().arg("continuous").args(&args));
    assert!(out.status.success());
    let names = windows(&store);
    assert!(!names.is_empty(), "a window was written");
    let window = store.join(&names[0]);
    let (pid, labels) = labels_of(&window, &split);
    assert!(pid > 0);
    assert_eq!(label(&labels, "container_id"), Some(CONTAINER_ID));
    assert_eq!(label(&labels, "container_runtime"), Some("docker"));
    assert_eq!(
        label(&labels, "process_linux_cgroup"),
        Some(cg.name().as_str())
    );
    assert_eq!(label(&labels, "host_name"), Some(host_name().as_str()));
    assert_eq!(
        label(&labels, "process_executable_build_id_gnu"),
        Some(build_id(&split).as_str())
    );
    assert_eq!(label(&labels, "service_name"), Some("containerized"));
    assert_eq!(label(&labels, "team"), Some("storage"));

    // a real client reads the window: labels on samples, the mapping's range
    let raw = go_pprof(&[OsStr::new("-raw"), window.as_os_str()]);
    assert!(
        raw.contains(&format!("container_id:[{CONTAINER_ID}]")),
        "{raw}"
    );
    assert!(raw.contains(&format!("pid:[{pid}]")));
    assert!(raw.contains("comm:[split]"));
    check_mapping(&raw, &split);

    // query reads the store back and keeps both
    let merged = dir.path().join("merged.pb.gz");
    assert!(run(flamebpf()
        .args(["query", "--dir"])
        .arg(&store)
        .arg("-o")
        .arg(&merged))
    .status
    .success());
    let (_, again) = labels_of(&merged, &split);
    assert_eq!(again, labels);
    check_mapping(&go_pprof(&[OsStr::new("-raw"), merged.as_os_str()]), &split);
}

#[test]
fn a_record_pprof_has_real_mappings_and_the_default_service_name() {
    require_bpf!();
    let split = workload("split");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.pb.gz");
    let _lock = capture_lock();
    let r = run(flamebpf()
        .args(["record", "-F", "99", "-o"])
        .arg(&out)
        .arg("--")
        .arg(&split)
        .arg("1"));
    assert!(r.status.success());
    let raw = go_pprof(&[OsStr::new("-raw"), out.as_os_str()]);
    check_mapping(&raw, &split);
    let (_, labels) = labels_of(&out, &split);
    assert_eq!(label(&labels, "service_name"), Some("split"));
    assert_eq!(label(&labels, "container_id"), None);
    // every location of the workload lies in its mapping's range
    let profile = flamegraphs::pprof::read(&std::fs::read(&out).unwrap()).unwrap();
    let in_workload = locations_of(&profile, &split);
    assert!(
        !in_workload.is_empty(),
        "the workload's own code was sampled"
    );
    for (m, l) in in_workload {
        assert!(m.start <= l.address && l.address < m.limit);
    }

    // a stripped copy names its addresses `split-stripped+0xOFFSET`: the
    // mapping turns each location's address back into that file offset, as a
    // backend symbolizing by build id does
    let stripped = stripped_workload("split");
    let out = dir.path().join("stripped.pb.gz");
    let r = run(flamebpf()
        .args(["record", "-F", "99", "-o"])
        .arg(&out)
        .arg("--")
        .arg(&stripped)
        .arg("1"));
    assert!(r.status.success());
    let profile = flamegraphs::pprof::read(&std::fs::read(&out).unwrap()).unwrap();
    let mut checked = 0;
    for (m, l) in locations_of(&profile, &stripped) {
        let name = &profile.frame(l.frames[0]).name;
        if let Some(hex) = name.strip_prefix("split-stripped+0x") {
            let offset = u64::from_str_radix(hex, 16).unwrap();
            assert_eq!(
                m.file_offset(l.address),
                offset,
                "{name} at {:#x}",
                l.address
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "the stripped workload's code was sampled");
    check_mapping(&go_pprof(&[OsStr::new("-raw"), out.as_os_str()]), &stripped);
}

/// The locations in `exe`'s mappings, with their mapping.
fn locations_of<'a>(
    profile: &'a flamegraphs::Profile,
    exe: &Path,
) -> Vec<(&'a flamegraphs::Mapping, &'a flamegraphs::Location)> {
    profile
        .locations()
        .iter()
        .filter_map(|l| Some((&profile.mappings()[l.mapping? as usize], l)))
        .filter(|(m, _)| m.path == exe.to_str().unwrap())
        .collect()
}

#[test]
fn bad_labels_are_refused_before_sampling() {
    for (flag, value, expect) in [
        ("--label", "a-b=c", "--label \"a-b=c\""),
        ("--label", "novalue", "expected KEY=VALUE"),
        ("--label", "pid=1", "reserved"),
        ("--label-rule", "nginx", "--label-rule"),
        ("--label-rule", "pid:x=y", "cgroup, comm or exe"),
    ] {
        let out = flamebpf()
            .args(["record", "-d", "1", flag, value, "--", "true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}");
        assert!(stderr.contains(expect), "{flag} {value}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    }
}
