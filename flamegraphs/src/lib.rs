//! flamebpf's profile model and its writers.
//!
//! A [`Profile`] is what a capture becomes once symbolized: interned frames, stacks
//! of frames with sample counts and weights, and metadata about the capture. Each
//! output format is a writer over that model, so nothing format-specific lives in the
//! capture code. This crate knows nothing about BPF or perf events and its tests need
//! neither root nor clang.

mod error;
pub mod folded;
mod profile;
pub mod svg;

pub use error::Error;
pub use profile::{Frame, FrameId, FrameKind, Meta, Profile, Sample};

/// The output formats this crate writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Folded stacks, one `comm;outer;...;leaf COUNT` line per unique stack.
    Folded,
    /// An interactive SVG flame graph made by inferno.
    Svg,
}

impl Format {
    /// All formats, in the order `--help` lists them.
    pub const ALL: &'static [Format] = &[Format::Folded, Format::Svg];

    /// The name used by `--format`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Folded => "folded",
            Format::Svg => "svg",
        }
    }

    /// Parses a `--format` name.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// The format a file name implies by its extension, if any.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?;
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "svg" => Some(Format::Svg),
            "folded" | "txt" => Some(Format::Folded),
            _ => None,
        }
    }

    /// Writes `profile` in this format.
    pub fn write<W: std::io::Write>(
        self,
        profile: &Profile,
        svg: &svg::SvgOptions,
        out: W,
    ) -> Result<(), Error> {
        match self {
            Format::Folded => folded::write(profile, out),
            Format::Svg => svg::write(profile, svg, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn format_from_extension() {
        assert_eq!(Format::from_path(Path::new("a/b.svg")), Some(Format::Svg));
        assert_eq!(Format::from_path(Path::new("b.SVG")), Some(Format::Svg));
        assert_eq!(
            Format::from_path(Path::new("b.folded")),
            Some(Format::Folded)
        );
        assert_eq!(Format::from_path(Path::new("b.txt")), Some(Format::Folded));
        assert_eq!(Format::from_path(Path::new("b.json")), None);
        assert_eq!(Format::from_path(Path::new("noext")), None);
    }

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.name()), Some(*f));
        }
        assert_eq!(Format::from_name("png"), None);
    }
}
