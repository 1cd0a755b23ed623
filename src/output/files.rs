//! The `-o` files: which format each one gets, checks made before sampling starts,
//! and atomic writes (a temporary file in the same directory, then a rename), so a
//! crash or Ctrl-C never leaves a half-written file behind.

use std::io::Write;
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

/// Writes `profile` to every output, each atomically.
pub fn write_all(outputs: &[Output], profile: &Profile, options: &WriteOptions) -> Result<()> {
    for o in outputs {
        write_atomic(&o.path, |w| Ok(o.format.write(profile, options, w)?))?;
    }
    Ok(())
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
        let dir = parent_dir(&o.path);
        if !dir.is_dir() {
            bail!(
                "cannot write {}: directory {} does not exist",
                o.path.display(),
                dir.display()
            );
        }
        if o.path.is_dir() {
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
/// only once complete. Standard output is written directly.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    if path.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        fill(&mut lock)?;
        lock.flush()?;
        return Ok(());
    }
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".flamebpf-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    fill(tmp.as_file_mut()).with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file().sync_data().ok();
    // tempfile creates 0600 files; an output is as readable as any other new file.
    set_default_mode(tmp.as_file());
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
}
