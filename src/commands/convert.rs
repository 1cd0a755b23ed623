//! `flamebpf convert` and `flamebpf diff`: folded stacks from any collapser into
//! every output format, and differential flame graphs of two captures.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use flamegraphs::{folded, Meta, Profile};

use crate::cli::{ConvertArgs, DiffArgs};
use crate::output::{self, Output};

/// Reads a folded file (`-` is standard input) as it streams in, refusing it
/// whole, with the line number, at the first malformed or oversized line.
fn read_folded(path: &Path) -> Result<Profile> {
    let name = if path.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let meta = Meta {
        target: name.clone(),
        event: "samples".into(),
        unit: "samples".into(),
        start: SystemTime::now(),
        ..Meta::default()
    };
    let parsed = if path.as_os_str() == "-" {
        folded::parse_reader(std::io::stdin().lock(), meta)
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {name}"))?;
        folded::parse_reader(file, meta)
    };
    parsed.map_err(|e| anyhow::anyhow!("{name}:{}: {}", e.line, e.reason))
}

/// The folded text of a profile read by [`read_folded`], for inferno's diff.
fn folded_text(profile: &Profile) -> String {
    folded::lines(profile, false)
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}\n"))
        .collect()
}

/// `flamebpf convert INPUT -o OUTPUT...`.
pub fn convert(args: ConvertArgs) -> Result<i32> {
    let outputs = output::plan(&args.out.output, args.out.format.map(Into::into))?;
    output::preflight(&outputs)?;
    let profile = read_folded(&args.input)?;
    output::write_all(&outputs, &profile, &output::write_options(&args.out))?;
    Ok(0)
}

/// `flamebpf diff BEFORE AFTER -o diff.svg`.
pub fn diff(args: DiffArgs) -> Result<i32> {
    let output = Output {
        path: args.output.clone(),
        format: flamegraphs::Format::Svg,
    };
    output::preflight(std::slice::from_ref(&output))?;
    let before = folded_text(&read_folded(&args.before)?);
    let after = folded_text(&read_folded(&args.after)?);
    let svg = output::files::svg_options(&args.svg);
    output::write_atomic(&output.path, |w| {
        Ok(flamegraphs::svg::write_diff(
            &before,
            &after,
            args.normalize,
            &svg,
            w,
        )?)
    })?;
    Ok(0)
}
