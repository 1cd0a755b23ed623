//! SVG flame graphs, drawn by inferno from the folded lines.
//!
//! inferno escapes XML's markup characters, but XML 1.0 has no way at all to write
//! NUL and most other control characters, even as references: [`xml_safe`] shows
//! them as `\xNN` text before inferno sees a name, so any frame name (a JIT map,
//! a folded file) gives a well-formed SVG.

use std::io::Write;

use inferno::flamegraph::{self, color::Palette, defaults, Options, TextTruncateDirection};

use crate::{folded, Error, FrameKind, Profile};

/// How the SVG looks beyond what the profile itself says.
#[derive(Debug, Clone, Default)]
pub struct SvgOptions {
    /// The title above the graph; `None` for "Flame Graph".
    pub title: Option<String>,
    /// Image width in pixels; `None` for inferno's default (1200).
    pub width: Option<usize>,
    /// An icicle graph: roots at the top.
    pub inverted: bool,
}

/// The subtitle every flamebpf SVG carries: what was profiled, how and how much.
pub fn subtitle(profile: &Profile) -> String {
    let m = &profile.meta;
    if m.unit == "samples" {
        // converted folded input: nothing is known but the counts
        return format!("{} · {} samples", m.target, profile.total_weight());
    }
    let rate = match (m.frequency, m.period) {
        (Some(hz), _) => format!(" at {hz} Hz"),
        (None, Some(p)) => format!(" every {p} events"),
        (None, None) => String::new(),
    };
    // off-CPU entries count waits, not samples
    let samples = profile
        .samples
        .iter()
        .filter(|s| !profile.is_off_cpu(s))
        .fold(0u64, |t, s| t.saturating_add(s.count));
    let weight = profile.total_weight();
    let measured = if m.unit == "ns" && m.off_cpu {
        let off = profile.off_cpu_weight();
        format!(
            "{:.2} s on CPU, {:.2} s off CPU",
            weight.saturating_sub(off) as f64 / 1e9,
            off as f64 / 1e9
        )
    } else if m.unit == "ns" {
        format!("{:.2} s on CPU", weight as f64 / 1e9)
    } else {
        format!("{weight} {}", m.event)
    };
    format!(
        "{target} · {event}{rate} · {secs:.1} s · {samples} sample{s}, {measured}",
        target = m.target,
        event = m.event,
        secs = m.duration.as_secs_f64(),
        s = if samples == 1 { "" } else { "s" },
    )
}

/// inferno's image width when none is given (its own constant is private).
const DEFAULT_WIDTH: usize = 1200;

/// `subtitle(profile)` cut to fit one line of an image `width` pixels wide: the
/// target (a command line can be any length) is shortened to what the line leaves
/// it and ends in `…`; what was sampled, how and how much always shows. The whole
/// subtitle goes into the line's tooltip (see [`write`]).
pub fn fitted_subtitle(profile: &Profile, width: usize) -> String {
    let full = subtitle(profile);
    // a margin of two characters at each edge
    let fits = ((width as f64 / (defaults::FONT_SIZE as f64 * defaults::FONT_WIDTH)) as usize)
        .saturating_sub(4);
    let len = full.chars().count();
    if len <= fits {
        return full;
    }
    let target = &profile.meta.target;
    let Some(rest) = full.strip_prefix(target.as_str()) else {
        return full;
    };
    // at least a few characters of the target, even if the line still overflows
    let keep = fits.saturating_sub(rest.chars().count() + 1).max(12);
    if keep >= target.chars().count() {
        return full;
    }
    let short: String = target.chars().take(keep).collect();
    format!("{}…{rest}", short.trim_end())
}

/// Adds `tooltip` as the `<title>` of inferno's subtitle line: browsers show it on
/// hover, and the whole subtitle stays in the file however the line was cut.
fn with_subtitle_tooltip(svg: &str, tooltip: &str) -> String {
    let Some(start) = svg.find("id=\"subtitle\"") else {
        return svg.to_string();
    };
    let Some(end) = svg[start..].find("</text>") else {
        return svg.to_string();
    };
    let at = start + end;
    format!(
        "{}<title>{}</title>{}",
        &svg[..at],
        xml_escape(tooltip),
        &svg[at..]
    )
}

/// The fill of the frames that end off-CPU stacks: blue for blocked time (as
/// off-CPU flame graphs draw it), purple for run-queue time; no palette inferno
/// has gives either to a user frame.
pub const OFF_CPU_FILL: &str = "rgb(90,140,230)";
/// See [`OFF_CPU_FILL`].
pub const RUNQUEUE_FILL: &str = "rgb(170,110,220)";

/// The fill of Python functions (`_[p]` frames): Python's yellow, which no
/// palette inferno has gives to a native frame.
pub const PYTHON_FILL: &str = "rgb(255,212,59)";

/// Gives the `[off-cpu]` and `[runqueue]` frames (with `off_cpu`) and Python
/// functions their own colour: each frame is a `<g>` whose `<title>` starts with
/// its name, followed by its `<rect>`.
fn with_own_colours(svg: &str, off_cpu: bool) -> String {
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(at) = rest.find("<title>") {
        let after = &rest[at + "<title>".len()..];
        let fill = if off_cpu && after.starts_with(&format!("{} (", crate::OFF_CPU)) {
            Some(OFF_CPU_FILL)
        } else if off_cpu && after.starts_with(&format!("{} (", crate::RUNQUEUE)) {
            Some(RUNQUEUE_FILL)
        } else if is_python_title(after) {
            Some(PYTHON_FILL)
        } else {
            None
        };
        let (Some(fill), Some(end)) = (fill, after.find("</g>")) else {
            out.push_str(&rest[..at + "<title>".len()]);
            rest = after;
            continue;
        };
        let frame = &after[..end];
        let recoloured = match (frame.find("fill=\"rgb("), frame.find("<rect")) {
            (Some(f), Some(r)) if f > r => {
                let close = frame[f + 6..].find('"').map_or(frame.len(), |c| f + 6 + c);
                format!("{}fill=\"{fill}{}", &frame[..f], &frame[close..])
            }
            _ => frame.to_string(),
        };
        out.push_str(&rest[..at + "<title>".len()]);
        out.push_str(&recoloured);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Whether a frame's title (what follows `<title>`) is a Python function's:
/// `NAME_[p] (N samples, P%)</title>`, the marker kept in the label.
fn is_python_title(after: &str) -> bool {
    after
        .find("</title>")
        .and_then(|end| after[..end].rfind(" ("))
        .is_some_and(|cut| after[..cut].ends_with("_[p]"))
}

/// `s` with the characters XML 1.0 cannot carry (controls other than tab and line
/// breaks, U+FFFE, U+FFFF) written as `\xNN` / `\u{NNNN}` text.
pub fn xml_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{fffe}' | '\u{ffff}')
    };
    if !s.contains(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !bad(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// What inferno calls a unit of width in its tooltips.
fn count_name(profile: &Profile) -> String {
    match profile.meta.unit.as_str() {
        "ns" | "samples" => profile.meta.unit.clone(),
        _ => profile.meta.event.clone(),
    }
}

fn base_options(options: &SvgOptions) -> Options<'static> {
    let mut opts = Options::default();
    let default_title = if options.inverted {
        "Icicle Graph"
    } else {
        "Flame Graph"
    };
    opts.title = options
        .title
        .as_deref()
        .map_or_else(|| default_title.to_string(), |t| xml_safe(t).into_owned());
    opts.image_width = options.width;
    if options.inverted {
        opts.direction = flamegraph::Direction::Inverted;
    }
    opts.deterministic = true;
    // A label too long for its box keeps its beginning (the function's name, not
    // the tail of a template argument), as FlameGraph does.
    opts.text_truncate_direction = TextTruncateDirection::Right;
    opts
}

/// Writes a differential flame graph of two folded texts (inferno's differential
/// mode): AFTER's widths, red where a frame grew, blue where it shrank.
/// `normalize` scales BEFORE to AFTER's total first.
pub fn write_diff<W: Write>(
    before: &str,
    after: &str,
    normalize: bool,
    options: &SvgOptions,
    out: W,
) -> Result<(), Error> {
    let mut merged = Vec::new();
    let diff = inferno::differential::Options {
        normalize,
        ..Default::default()
    };
    let (before, after) = (xml_safe(before), xml_safe(after));
    inferno::differential::from_readers(diff, before.as_bytes(), after.as_bytes(), &mut merged)?;
    let mut opts = base_options(options);
    if options.title.is_none() {
        opts.title = "Differential Flame Graph".into();
    }
    opts.subtitle = Some(if normalize {
        "after's widths; red grew, blue shrank (before scaled to after's total)".into()
    } else {
        "after's widths; red grew, blue shrank".into()
    });
    let mut out = std::io::BufWriter::new(out);
    flamegraph::from_reader(&mut opts, merged.as_slice(), &mut out)
        .map_err(|e| Error::Svg(e.to_string()))?;
    out.flush()?;
    Ok(())
}

/// Writes the profile as an SVG flame graph; `with_lines` adds file:line to names.
pub fn write<W: Write>(
    profile: &Profile,
    options: &SvgOptions,
    with_lines: bool,
    out: W,
) -> Result<(), Error> {
    let lines = folded::lines(profile, with_lines);
    let text: Vec<String> = lines
        .iter()
        .map(|(s, c)| format!("{} {c}", xml_safe(s)))
        .collect();
    let mut opts = base_options(options);
    let full_subtitle = xml_safe(&subtitle(profile)).into_owned();
    opts.subtitle = Some(
        xml_safe(&fitted_subtitle(
            profile,
            options.width.unwrap_or(DEFAULT_WIDTH),
        ))
        .into_owned(),
    );
    opts.count_name = count_name(profile);
    // The java palette colours `_[k]` kernel and `_[i]` inlined frames apart from
    // user code, and `deterministic` makes the same input give the same bytes.
    opts.colors = Palette::Multi(flamegraph::color::MultiPalette::Java);
    if lines.is_empty() {
        // inferno refuses an empty input; an empty capture still gets a (blank) graph.
        return write_empty(&opts, &full_subtitle, out);
    }
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut opts, text.iter().map(String::as_str), &mut svg)
        .map_err(|e| Error::Svg(e.to_string()))?;
    let svg = String::from_utf8(svg).map_err(|e| Error::Svg(e.to_string()))?;
    let svg = with_subtitle_tooltip(&svg, &full_subtitle);
    let python = profile.frames().iter().any(|f| f.kind == FrameKind::Python);
    let svg = if profile.meta.off_cpu || python {
        with_own_colours(&svg, profile.meta.off_cpu)
    } else {
        svg
    };
    let mut out = out;
    out.write_all(svg.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn write_empty<W: Write>(opts: &Options, tooltip: &str, mut out: W) -> Result<(), Error> {
    let width = opts.image_width.unwrap_or(DEFAULT_WIDTH);
    let title = xml_escape(&opts.title);
    let sub = xml_escape(opts.subtitle.as_deref().unwrap_or(""));
    let tooltip = xml_escape(tooltip);
    write!(
        out,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"{width}\" height=\"80\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <text x=\"{x}\" y=\"24\" text-anchor=\"middle\" font-size=\"17\">{title}</text>\n\
         <text x=\"{x}\" y=\"48\" text-anchor=\"middle\" font-size=\"12\">{sub}<title>{tooltip}</title></text>\n\
         <text x=\"{x}\" y=\"70\" text-anchor=\"middle\" font-size=\"12\">No samples</text>\n\
         </svg>\n",
        x = width / 2
    )?;
    Ok(())
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, FrameKind, Meta, Sample};
    use std::time::Duration;

    fn profile() -> Profile {
        let mut p = Profile::new(Meta {
            target: "command ./demo".into(),
            frequency: Some(99),
            duration: Duration::from_millis(2500),
            ..Meta::default()
        });
        let main = p.frame_location(Frame::named("main", FrameKind::User));
        let k = p.frame_location(Frame::named("do_syscall_64", FrameKind::Kernel));
        p.samples.push(Sample {
            pid: 7,
            tid: 7,
            comm: "demo".into(),
            stack: vec![main, k],
            count: 41,
            weight: 41 * 10_101_010,
        });
        p
    }

    #[test]
    fn python_frames_have_their_own_colour() {
        let mut p = Profile::new(Meta::default());
        let f = p.frame_location(Frame::named("heavy (split.py)", FrameKind::Python));
        let main = p.frame_location(Frame::named("main", FrameKind::User));
        p.samples.push(Sample {
            pid: 1,
            tid: 1,
            comm: "python3".into(),
            stack: vec![main, f],
            count: 5,
            weight: 5,
        });
        let mut out = Vec::new();
        write(&p, &SvgOptions::default(), false, &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        let at = svg
            .find("<title>heavy (split.py)_[p]")
            .expect("the Python frame");
        let rest = &svg[at..];
        let end = rest.find("</g>").unwrap();
        assert!(rest[..end].contains(PYTHON_FILL), "{}", &rest[..end]);
        assert_eq!(svg.matches(PYTHON_FILL).count(), 1, "only the Python frame");
    }

    #[test]
    fn control_bytes_in_names_give_well_formed_xml() {
        let mut p = profile();
        let nul = p.frame_location(Frame::named("a\0b\x01c\x1b\u{fffe}", FrameKind::User));
        p.samples.push(Sample {
            pid: 7,
            tid: 7,
            comm: "de\x07mo".into(),
            stack: vec![nul],
            count: 1,
            weight: 1_000_000_000,
        });
        let opts = SvgOptions {
            title: Some("t\0".into()),
            ..SvgOptions::default()
        };
        let mut out = Vec::new();
        write(&p, &opts, false, &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        let bad: Vec<char> = svg
            .chars()
            .filter(|&c| (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{fffe}')
            .collect();
        assert!(bad.is_empty(), "characters XML cannot carry: {bad:?}");
        assert!(svg.contains("a\\x00b\\x01c\\x1b\\u{fffe}"), "shown as text");
        let mut out = Vec::new();
        write_diff("a;b\0 1\n", "a;b\0 2\n", false, &opts, &mut out).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains('\0'));
    }

    #[test]
    fn subtitle_states_target_event_rate_duration_and_samples() {
        assert_eq!(
            subtitle(&profile()),
            "command ./demo · cpu-clock at 99 Hz · 2.5 s · 41 samples, 0.41 s on CPU"
        );
    }

    #[test]
    fn svg_has_title_subtitle_and_frames_and_is_deterministic() {
        let opts = SvgOptions {
            title: Some("demo <profile>".into()),
            ..SvgOptions::default()
        };
        let mut a = Vec::new();
        write(&profile(), &opts, false, &mut a).unwrap();
        let mut b = Vec::new();
        write(&profile(), &opts, false, &mut b).unwrap();
        assert_eq!(a, b);
        let svg = String::from_utf8(a).unwrap();
        assert!(svg.contains("demo &lt;profile&gt;"), "{svg}");
        assert!(svg.contains("41 samples"));
        assert!(
            svg.contains("414,141,410 ns"),
            "tooltips count the event's unit"
        );
        // inferno drops the `_[k]` marker from the label and paints the frame orange.
        assert!(
            svg.contains("do_syscall_64 (414,141,410 ns, 100.00%)"),
            "{svg}"
        );
        assert!(svg.contains("main"));
    }

    /// The labels inferno drew in the SVG (the text of each frame's box).
    fn labels(svg: &str) -> Vec<String> {
        svg.split("<g><title>")
            .skip(1)
            .filter_map(|g| {
                let text = g.split("<text").nth(1)?;
                let start = text.find('>')? + 1;
                let end = text.find("</text>")?;
                Some(text[start..end].to_string())
            })
            .collect()
    }

    #[test]
    fn a_label_that_does_not_fit_keeps_its_beginning() {
        let long = format!(
            "node::LoadEnvironment<{}>::run",
            "std::function<void (node::Environment*)>, ".repeat(12)
        );
        let mut p = profile();
        let main = p.frame_location(Frame::named("main", FrameKind::User));
        let deep = p.frame_location(Frame::named(long.clone(), FrameKind::User));
        p.samples[0].stack = vec![main, deep];
        let mut out = Vec::new();
        write(&p, &SvgOptions::default(), false, &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(
            svg.contains("var truncate_text_right = true"),
            "the script cuts on the right too"
        );
        let cut: Vec<String> = labels(&svg)
            .into_iter()
            .filter(|l| l.starts_with("node::LoadEnvironment&lt;std::function"))
            .collect();
        assert_eq!(cut.len(), 1, "{:?}", labels(&svg));
        assert!(cut[0].ends_with(".."), "{}", cut[0]);
        assert!(
            cut[0].len() < long.len() && cut[0].len() > 100,
            "{}",
            cut[0]
        );
    }

    #[test]
    fn a_long_command_is_shortened_in_the_subtitle_and_kept_in_its_tooltip() {
        let mut p = profile();
        p.meta.target = format!("command ./server {}", "--option=value ".repeat(40));
        let fitted = fitted_subtitle(&p, 1200);
        assert!(fitted.chars().count() <= 165, "{fitted}");
        assert!(
            fitted.starts_with("command ./server --option=value"),
            "{fitted}"
        );
        assert!(
            fitted.ends_with("…· cpu-clock at 99 Hz · 2.5 s · 41 samples, 0.41 s on CPU")
                || fitted.ends_with("… · cpu-clock at 99 Hz · 2.5 s · 41 samples, 0.41 s on CPU"),
            "{fitted}"
        );
        let mut out = Vec::new();
        write(&p, &SvgOptions::default(), false, &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        let subtitle = svg.split("id=\"subtitle\"").nth(1).unwrap();
        let subtitle = &subtitle[..subtitle.find("</text>").unwrap()];
        assert!(
            subtitle.contains(&format!("<title>{}</title>", subtitle_of(&p))),
            "{subtitle}"
        );
        // a short one is left alone
        assert_eq!(fitted_subtitle(&profile(), 1200), subtitle_of(&profile()));
        // a narrower image cuts more
        assert!(fitted_subtitle(&p, 600).chars().count() < fitted.chars().count());
    }

    fn subtitle_of(p: &Profile) -> String {
        subtitle(p)
    }

    #[test]
    fn empty_profile_still_gives_an_svg() {
        let p = Profile::new(Meta::default());
        let mut out = Vec::new();
        write(&p, &SvgOptions::default(), false, &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("No samples"));
    }
}
