//! flamebpf's profile model and its writers.
//!
//! A [`Profile`] is what a capture becomes once symbolized: interned frames, stacks
//! of frames with sample counts and weights, and metadata about the capture. Each
//! output format is a writer over that model, so nothing format-specific lives in the
//! capture code. This crate knows nothing about BPF or perf events and its tests need
//! neither root nor clang.

mod error;
pub mod folded;
pub mod labels;
pub mod pprof;
mod profile;
pub mod speedscope;
pub mod svg;

pub use error::Error;
pub use labels::Labels;
pub use profile::{
    Frame, FrameId, FrameKind, Location, LocationId, Mapping, MappingId, Meta, Profile, Sample,
    OFF_CPU, RUNQUEUE,
};

/// The output formats this crate writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Folded stacks, one `comm;outer;...;leaf COUNT` line per unique stack.
    Folded,
    /// An interactive SVG flame graph made by inferno.
    Svg,
    /// speedscope's JSON format.
    Speedscope,
    /// pprof's gzipped protobuf.
    Pprof,
}

/// Options of the writers that have any.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Folded and SVG: add ` (file:line)` to frame names where known (speedscope and
    /// pprof carry file and line in fields of their own, always).
    pub lines: bool,
    /// For SVG.
    pub svg: svg::SvgOptions,
    /// For speedscope.
    pub speedscope: speedscope::SpeedscopeOptions,
}

impl Format {
    /// All formats, in the order `--help` lists them.
    pub const ALL: &'static [Format] = &[
        Format::Svg,
        Format::Folded,
        Format::Speedscope,
        Format::Pprof,
    ];

    /// The name used by `--format`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Folded => "folded",
            Format::Svg => "svg",
            Format::Speedscope => "speedscope",
            Format::Pprof => "pprof",
        }
    }

    /// Parses a `--format` name.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// The extensions that imply this format, as `--help` lists them.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Format::Folded => &[".folded", ".txt"],
            Format::Svg => &[".svg"],
            Format::Speedscope => &[".speedscope.json", ".json"],
            Format::Pprof => &[".pb.gz", ".pprof", ".pb"],
        }
    }

    /// The format a file name implies by its extension, if any. The name need
    /// not be UTF-8: only its ASCII extension is read.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        let name = path.file_name()?.as_encoded_bytes().to_ascii_lowercase();
        Format::ALL.iter().copied().find(|f| {
            f.extensions()
                .iter()
                .any(|e| name.ends_with(e.as_bytes()) && name.len() > e.len())
        })
    }

    /// Whether the format is text (may go to a terminal).
    pub fn is_text(self) -> bool {
        self != Format::Pprof
    }

    /// Writes `profile` in this format.
    pub fn write<W: std::io::Write>(
        self,
        profile: &Profile,
        options: &WriteOptions,
        out: W,
    ) -> Result<(), Error> {
        match self {
            Format::Folded => folded::write(profile, options.lines, out),
            Format::Svg => svg::write(profile, &options.svg, options.lines, out),
            Format::Speedscope => speedscope::write(profile, &options.speedscope, out),
            Format::Pprof => pprof::write(profile, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn format_from_a_name_that_is_not_utf8() {
        use std::os::unix::ffi::OsStrExt;
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"caf\xe9.SVG"));
        assert_eq!(Format::from_path(p), Some(Format::Svg));
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"\xff\xfe.pb.gz"));
        assert_eq!(Format::from_path(p), Some(Format::Pprof));
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(Format::from_path(Path::new("a/b.svg")), Some(Format::Svg));
        assert_eq!(Format::from_path(Path::new("b.SVG")), Some(Format::Svg));
        assert_eq!(
            Format::from_path(Path::new("b.folded")),
            Some(Format::Folded)
        );
        assert_eq!(Format::from_path(Path::new("b.txt")), Some(Format::Folded));
        assert_eq!(
            Format::from_path(Path::new("b.speedscope.json")),
            Some(Format::Speedscope)
        );
        assert_eq!(
            Format::from_path(Path::new("b.json")),
            Some(Format::Speedscope)
        );
        assert_eq!(Format::from_path(Path::new("b.pb.gz")), Some(Format::Pprof));
        assert_eq!(Format::from_path(Path::new("b.pprof")), Some(Format::Pprof));
        assert_eq!(Format::from_path(Path::new("b.png")), None);
        assert_eq!(Format::from_path(Path::new("noext")), None);
        assert_eq!(Format::from_path(Path::new(".svg")), None);
    }

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.name()), Some(*f));
        }
        assert_eq!(Format::from_name("png"), None);
    }
}
