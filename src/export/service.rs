//! The `service_name` a window is exported under, in one place so that labels
//! (`--label service_name=…`, rules) can decide it: the value given, else the
//! profiled command's or process's executable name, else `flamebpf` (a whole
//! machine is no one service; the backend splits it by the samples' labels).

use std::ffi::OsString;
use std::path::Path;

/// What names the exported windows' service.
pub fn service_name(given: Option<&str>, command: &[OsString], pids: &[u32]) -> String {
    if let Some(name) = given.filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    let from_command = command
        .first()
        .and_then(|c| Path::new(c).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    // one process: its executable's name, as /proc has it now
    let from_pid = || match pids {
        [pid] => std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
        _ => None,
    };
    from_command
        .or_else(from_pid)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "flamebpf".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_then_executable_then_flamebpf() {
        let cmd = [OsString::from("/usr/bin/python3"), OsString::from("x.py")];
        assert_eq!(service_name(Some("shop"), &cmd, &[]), "shop");
        assert_eq!(service_name(None, &cmd, &[]), "python3");
        let me = std::process::id();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            service_name(None, &[], &[me]),
            exe.file_name().unwrap().to_string_lossy()
        );
        assert_eq!(service_name(None, &[], &[]), "flamebpf");
        assert_eq!(service_name(Some(""), &[], &[1, 2]), "flamebpf");
    }
}
