//! `flamebpf convert` and `flamebpf diff`: folded stacks from any collapser into
//! every output format, and differential flame graphs of two captures.

use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use flamegraphs::{folded, Meta, Profile};

use crate::cli::{ConvertArgs, DiffArgs};
use crate::output::{self, Output};

/// Reads a folded file (`-` is standard input), refusing it whole, with the line
/// number, at the first malformed line.
fn read_folded(path: &Path) -> Result<(String, Profile)> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
    }
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
    let profile = folded::parse(&text, meta)
        .map_err(|e| anyhow::anyhow!("{name}:{}: {}", e.line, e.reason))?;
    Ok((text, profile))
}

/// `flamebpf convert INPUT -o OUTPUT...`.
pub fn convert(args: ConvertArgs) -> Result<i32> {
    let outputs = output::plan(&args.out.output, args.out.format.map(Into::into))?;
    output::preflight(&outputs)?;
    let (_, profile) = read_folded(&args.input)?;
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
    let (before, _) = read_folded(&args.before)?;
    let (after, _) = read_folded(&args.after)?;
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
