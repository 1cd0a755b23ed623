//! Parser for `/proc/PID/maps`, used to learn the address spaces of processes that
//! were already running when tracking started.

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcMapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Whether the mapping is executable.
    pub exec: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Inode (0 for anonymous mappings).
    pub ino: u64,
    /// Path or pseudo name (`[vdso]`); empty for anonymous memory.
    pub path: String,
}

/// Parses the text of a maps file; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<ProcMapping> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<ProcMapping> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let dev = fields.next()?;
    let ino = fields.next()?;
    let path = fields.next().unwrap_or("").trim_start().to_string();
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    Some(ProcMapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        exec: perms.as_bytes().get(2) == Some(&b'x'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        major: u32::from_str_radix(major, 16).ok()?,
        minor: u32::from_str_radix(minor, 16).ok()?,
        ino: ino.parse().ok()?,
        path,
    })
}

/// Reads and parses `/proc/PID/maps`.
pub fn read(pid: u32) -> std::io::Result<Vec<ProcMapping>> {
    Ok(parse(&std::fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_backed_anonymous_and_pseudo_lines() {
        let text = "\
55d0c8a0e000-55d0c8a10000 r-xp 00002000 fe:01 1234                       /usr/bin/cat with space
7ffd1b9f2000-7ffd1b9f4000 r-xp 00000000 00:00 0                          [vdso]
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 
garbage line
";
        let maps = parse(text);
        assert_eq!(maps.len(), 3);
        assert_eq!(
            maps[0],
            ProcMapping {
                start: 0x55d0c8a0e000,
                end: 0x55d0c8a10000,
                exec: true,
                offset: 0x2000,
                major: 0xfe,
                minor: 1,
                ino: 1234,
                path: "/usr/bin/cat with space".into(),
            }
        );
        assert_eq!(maps[1].path, "[vdso]");
        assert!(!maps[2].exec);
        assert_eq!(maps[2].path, "");
    }

    #[test]
    fn reads_our_own_maps() {
        let maps = read(std::process::id()).unwrap();
        assert!(maps.iter().any(|m| m.exec && m.ino != 0));
    }
}
