//! The `-o` files: which format each one gets, checks made before sampling starts,
//! and atomic writes (a temporary file in the same directory, then a rename), so a
//! crash or Ctrl-C never leaves a half-written file behind.
//!
//! Only regular files are replaced that way. A path that names a device, a FIFO
//! or a socket (`/dev/null`, `/dev/stdout`, a pipe) is opened and written
//! directly, as a shell redirection would. Symbolic links are followed, as perf
//! follows them for `-o`: the file the link points to is written (atomically,
//! when it is regular) and the link stays. pprof outputs carry raw kernel
//! addresses, so they are created 0600, readable by root only when root runs the
//! capture; the other formats carry names only and get the usual mode.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flamegraphs::speedscope::SpeedscopeOptions;
use flamegraphs::svg::SvgOptions;
use flamegraphs::{Format, Profile, WriteOptions};

use crate::cli::{OutputArgs, SvgArgs};

/// One `-o` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Where to write; `-` is standard output.
    pub path: PathBuf,
    /// What to write there.
    pub format: Format,
}

impl Output {
    fn is_stdout(&self) -> bool {
        self.path.as_os_str() == "-"
    }
}

/// Decides each output's format: the extension when it names one, else `--format`,
/// else an error naming the choices. Standard output (`-`) defaults to folded.
pub fn plan(paths: &[PathBuf], explicit: Option<Format>) -> Result<Vec<Output>> {
    let default_path = [PathBuf::from("flamebpf.svg")];
    let paths = if paths.is_empty() {
        &default_path[..]
    } else {
        paths
    };
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let format = if path.as_os_str() == "-" {
            explicit.unwrap_or(Format::Folded)
        } else {
            match Format::from_path(path).or(explicit) {
                Some(f) => f,
                None => bail!(
                    "cannot tell the format of {}: name it {}, or give --format ({})",
                    path.display(),
                    extension_names(),
                    format_names()
                ),
            }
        };
        out.push(Output {
            path: path.clone(),
            format,
        });
    }
    if out.iter().filter(|o| o.is_stdout()).count() > 1 {
        bail!("standard output (-) can be given only once");
    }
    Ok(out)
}

fn format_names() -> String {
    Format::ALL
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn extension_names() -> String {
    Format::ALL
        .iter()
        .flat_map(|f| f.extensions())
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SVG settings the flags ask for.
pub fn svg_options(args: &SvgArgs) -> SvgOptions {
    SvgOptions {
        title: args.title.clone(),
        width: args.width.map(|w| w as usize),
        inverted: args.inverted,
    }
}

/// The writer settings the flags ask for.
pub fn write_options(args: &OutputArgs) -> WriteOptions {
    WriteOptions {
        lines: args.lines,
        svg: svg_options(&args.svg),
        speedscope: SpeedscopeOptions {
            per_thread: args.per_thread,
        },
    }
}

/// Writes `profile` to every output: regular files atomically, pprof ones 0600.
pub fn write_all(outputs: &[Output], profile: &Profile, options: &WriteOptions) -> Result<()> {
    for o in outputs {
        let fill = |w: &mut dyn Write| Ok(o.format.write(profile, options, w)?);
        if o.format == Format::Pprof {
            write_private(&o.path, fill)?;
        } else {
            write_atomic(&o.path, fill)?;
        }
    }
    Ok(())
}

/// The file `path` finally names, through any symbolic links (which need not
/// lead anywhere yet: the last one may name a file still to be created). `None`
/// when a link leads into /proc (`/dev/stdout`, `/dev/fd/N`): those name an open
/// descriptor, not a file, and are written in place.
pub fn follow_links(path: &Path) -> Result<Option<PathBuf>> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p)
                    .with_context(|| format!("cannot read the link {}", p.display()))?;
                p = parent_dir(&p).join(target);
                if p.starts_with("/proc") {
                    return Ok(None);
                }
            }
            _ => return Ok(Some(p)),
        }
    }
    bail!(
        "cannot write {}: too many levels of symbolic links",
        path.display()
    )
}

/// Where an output is written: in place (a device, FIFO, socket or descriptor),
/// or atomically at the file its links lead to.
fn destination(path: &Path) -> Result<(PathBuf, bool)> {
    if is_special(path) {
        return Ok((path.to_path_buf(), true));
    }
    Ok(match follow_links(path)? {
        Some(p) => (p, false),
        None => (path.to_path_buf(), true),
    })
}

/// Whether `path` exists and is neither a regular file nor a directory: a device,
/// a FIFO, a socket, written in place.
fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// The longest file name the directory's filesystem takes.
fn name_max(dir: &Path) -> Option<usize> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid NUL-terminated path; pathconf reads it only.
    let n = unsafe { libc::pathconf(c.as_ptr(), libc::_PC_NAME_MAX) };
    usize::try_from(n).ok().filter(|&n| n > 0)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Checks that every output can be written: its directory exists and accepts a
/// new file, and the path is not a directory. Leaves nothing behind.
pub fn preflight(outputs: &[Output]) -> Result<()> {
    for o in outputs.iter().filter(|o| !o.is_stdout()) {
        let (path, in_place) = destination(&o.path)?;
        if in_place {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .or_else(|e| match e.raw_os_error() {
                    // a FIFO with no reader yet: it is opened (blocking) at the end
                    Some(libc::ENXIO) => Ok(std::fs::File::open("/dev/null")?),
                    _ => Err(e),
                })
                .with_context(|| format!("cannot write {}", o.path.display()))?;
            continue;
        }
        let dir = parent_dir(&path);
        let name_len = path.file_name().map_or(0, |n| n.len());
        if let Some(max) = name_max(dir).filter(|&max| name_len > max) {
            bail!(
                "cannot write {}: the file name is {name_len} bytes, more than the {max} its filesystem takes",
                o.path.display()
            );
        }
        if let Err(e) = std::fs::symlink_metadata(&path) {
            if e.raw_os_error() == Some(libc::ENAMETOOLONG) {
                bail!("cannot write {}: the name is too long", o.path.display());
            }
        }
        if !dir.is_dir() {
            bail!(
                "cannot write {}: directory {} does not exist",
                o.path.display(),
                dir.display()
            );
        }
        if path.is_dir() {
            bail!("cannot write {}: it is a directory", o.path.display());
        }
        tempfile::Builder::new()
            .prefix(".flamebpf-check-")
            .tempfile_in(dir)
            .with_context(|| {
                format!(
                    "cannot write {}: directory {} is not writable",
                    o.path.display(),
                    dir.display()
                )
            })?;
    }
    Ok(())
}

/// Writes `path` through `fill`: into a temporary file beside it, renamed into place
/// only once complete. Standard output, devices and FIFOs are written directly.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    write_with_mode(path, None, fill)
}

/// [`write_atomic`], creating the file 0600: for what carries kernel addresses.
pub fn write_private(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    write_with_mode(path, Some(0o600), fill)
}

fn write_with_mode(
    path: &Path,
    mode: Option<u32>,
    fill: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    if path.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        fill(&mut lock)?;
        lock.flush()?;
        return Ok(());
    }
    let shown = path;
    let (path, in_place) = &destination(path)?;
    if *in_place {
        // No O_TRUNC: a device is written as it is, and truncating a FIFO means nothing.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", shown.display()))?;
        fill(&mut f).with_context(|| format!("writing {}", shown.display()))?;
        f.flush()?;
        return Ok(());
    }
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".flamebpf-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    fill(tmp.as_file_mut()).with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file().sync_data().ok();
    // tempfile creates 0600 files; an output is as readable as any other new file
    // unless it carries kernel addresses.
    match mode {
        Some(m) => {
            use std::os::unix::fs::PermissionsExt;
            let _ = tmp
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(m));
        }
        None => set_default_mode(tmp.as_file()),
    }
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

fn set_default_mode(file: &std::fs::File) {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask only swaps the process mask; it is restored at once.
    let mask = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    };
    let _ = file.set_permissions(std::fs::Permissions::from_mode(0o666 & !mask));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn formats_come_from_extensions_then_the_flag() {
        let o = plan(&[p("a.svg"), p("b.folded"), p("c.txt"), p("-")], None).unwrap();
        let f: Vec<Format> = o.iter().map(|o| o.format).collect();
        assert_eq!(
            f,
            [Format::Svg, Format::Folded, Format::Folded, Format::Folded]
        );
        let o = plan(&[p("a.out"), p("b.svg")], Some(Format::Folded)).unwrap();
        assert_eq!(o[0].format, Format::Folded);
        assert_eq!(o[1].format, Format::Svg);
        assert_eq!(plan(&[], None).unwrap()[0].path, p("flamebpf.svg"));
    }

    #[test]
    fn unknown_formats_are_refused() {
        let e = plan(&[p("a.png")], None).unwrap_err().to_string();
        assert!(e.contains("cannot tell the format of a.png"), "{e}");
        assert!(
            e.contains(".speedscope.json") && e.contains(".pb.gz"),
            "{e}"
        );
        assert!(plan(&[p("-"), p("-")], None).is_err());
    }

    #[test]
    fn preflight_refuses_missing_dirs_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let ok = Output {
            path: dir.path().join("x.svg"),
            format: Format::Svg,
        };
        preflight(std::slice::from_ref(&ok)).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "leaves nothing"
        );
        let missing = Output {
            path: dir.path().join("nope/x.svg"),
            format: Format::Svg,
        };
        let e = preflight(&[missing]).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let isdir = Output {
            path: dir.path().to_path_buf(),
            format: Format::Svg,
        };
        assert!(preflight(&[isdir])
            .unwrap_err()
            .to_string()
            .contains("is a directory"));
    }

    #[test]
    fn atomic_write_leaves_no_partial_file_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.folded");
        let r = write_atomic(&path, |w| {
            w.write_all(b"half")?;
            anyhow::bail!("interrupted")
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomic(&path, |w| Ok(w.write_all(b"main 1\n")?)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "main 1\n");
    }

    #[test]
    fn devices_and_fifos_are_written_in_place_and_links_followed() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        write_atomic(Path::new("/dev/null"), |w| Ok(w.write_all(b"x")?)).unwrap();
        let m = std::fs::symlink_metadata("/dev/null").unwrap();
        assert!(
            m.file_type().is_char_device(),
            "/dev/null is still a device"
        );
        let o = Output {
            path: p("/dev/null"),
            format: Format::Pprof,
        };
        preflight(std::slice::from_ref(&o)).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.clone().into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        write_atomic(&fifo, |w| Ok(w.write_all(b"main 1\n")?)).unwrap();
        assert_eq!(reader.join().unwrap(), b"main 1\n");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());

        let real = dir.path().join("real.pb.gz");
        let link = dir.path().join("link.pb.gz");
        std::os::unix::fs::symlink("real.pb.gz", &link).unwrap();
        write_private(&link, |w| Ok(w.write_all(b"data")?)).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"data");
        assert_eq!(
            std::fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o600,
            "pprof carries kernel addresses"
        );
    }

    #[test]
    fn names_too_long_for_the_filesystem_are_refused_before_sampling() {
        let dir = tempfile::tempdir().unwrap();
        let o = Output {
            path: dir.path().join(format!("{}.svg", "a".repeat(300))),
            format: Format::Svg,
        };
        let e = preflight(&[o]).unwrap_err().to_string();
        assert!(e.contains("more than the 255"), "{e}");
    }
}
