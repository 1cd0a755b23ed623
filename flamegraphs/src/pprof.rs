//! pprof's profile.proto, gzipped: what `go tool pprof`, Parca, Pyroscope and
//! Grafana read.
//!
//! The messages are declared with prost's derive, field numbers as in the official
//! github.com/google/pprof/proto/profile.proto; only the fields flamebpf fills are
//! declared (protobuf readers skip nothing they need: absent fields are defaults).

use std::collections::HashMap;
use std::io::Write;
use std::time::UNIX_EPOCH;

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use std::io::Read;
use std::time::Duration;

use crate::{Error, Frame, FrameKind, Location, Mapping, Meta, Profile, Sample};

/// `perftools.profiles.Profile`.
#[derive(Clone, PartialEq, Message)]
pub struct PProfile {
    /// What each sample value means.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<PSample>,
    /// Objects the locations lie in.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<PMapping>,
    /// Addresses with their (inlined) lines.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<PLocation>,
    /// Functions the lines name.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<PFunction>,
    /// All strings; index 0 is "".
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// When the capture started, ns since the epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// How long it sampled, ns.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// What the period counts.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// The sampling period.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string table indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// The sample type shown by default (string table index of its type).
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// `ValueType`: a type and a unit, as string table indices.
#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    /// e.g. "cpu".
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// e.g. "nanoseconds".
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// `Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct PSample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per sample type.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// pid, tid, comm.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// `Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// Key (string table index).
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// String value (string table index), or 0.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// Numeric value.
    #[prost(int64, tag = "3")]
    pub num: i64,
}

/// `Mapping`.
#[derive(Clone, PartialEq, Message)]
pub struct PMapping {
    /// Id, from 1.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Start of the mapped range.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// End of the mapped range.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// File offset of memory_start.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// Path (string table index).
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// Build id, hex (string table index).
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Locations in it carry function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// ... and file names.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// ... and line numbers.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// ... and inlined frames.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// `Location`.
#[derive(Clone, PartialEq, Message)]
pub struct PLocation {
    /// Id, from 1.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Its mapping, or 0.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The address: in its mapping's range, `file_offset` at `memory_start`
    /// (files of older versions had file offsets in mappings spanning everything).
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Innermost first: the last line is the function the others were inlined into.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

/// `Line`.
#[derive(Clone, PartialEq, Message)]
pub struct Line {
    /// Its function.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Source line, or 0.
    #[prost(int64, tag = "2")]
    pub line: i64,
}

/// `Function`.
#[derive(Clone, PartialEq, Message)]
pub struct PFunction {
    /// Id, from 1.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Name (string table index).
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// Name as the object has it (string table index).
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// Source file (string table index).
    #[prost(int64, tag = "4")]
    pub filename: i64,
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        let mut s = Strings::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// The sample types and period type pprof gets for this profile's event.
fn types(profile: &Profile, st: &mut Strings) -> (Vec<ValueType>, ValueType, i64) {
    let m = &profile.meta;
    let vt = |st: &mut Strings, t: &str, u: &str| ValueType {
        r#type: st.get(t),
        unit: st.get(u),
    };
    let samples = vt(st, "samples", "count");
    match m.unit.as_str() {
        // The timers: samples and CPU time, as Go's CPU profiles have them.
        "ns" => {
            let period = m
                .frequency
                .map(|hz| 1_000_000_000 / hz.max(1))
                .or(m.period)
                .unwrap_or(0) as i64;
            let cpu = vt(st, "cpu", "nanoseconds");
            if m.off_cpu {
                let off = vt(st, "off_cpu", "nanoseconds");
                return (vec![samples, cpu.clone(), off], cpu, period);
            }
            (vec![samples, cpu.clone()], cpu, period)
        }
        "samples" => (vec![samples.clone()], samples, 1),
        _ => {
            let ev = vt(st, &m.event, "count");
            (vec![samples, ev.clone()], ev, m.period.unwrap_or(0) as i64)
        }
    }
}

/// Builds the pprof message of a profile: the tables (mappings, functions,
/// locations) first, then the samples that point into them.
pub fn to_proto(profile: &Profile) -> PProfile {
    let mut st = Strings::new();
    let (sample_type, period_type, period) = types(profile, &mut st);
    let columns = sample_type.len();
    let (mapping, mapping_id) = mappings(profile, &mut st);
    let (function, frame_function) = functions(profile, &mut st);
    let location = locations(profile, &mapping_id, &frame_function);
    let sample = samples(profile, columns, &mut st);
    let m = &profile.meta;
    let comment = vec![st.get(&format!(
        "flamebpf {}: {}",
        env!("CARGO_PKG_VERSION"),
        m.target
    ))];
    let default_sample_type = period_type.r#type;
    PProfile {
        sample_type,
        sample,
        mapping,
        location,
        function,
        time_nanos: m
            .start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
        duration_nanos: m.duration.as_nanos() as i64,
        period_type: Some(period_type),
        period,
        comment,
        default_sample_type,
        string_table: st.table,
    }
}

/// The mappings, and each profile mapping's pprof id. pprof calls the first
/// mapping the profile's main binary: real objects go before pseudo ones such as
/// [kernel.kallsyms].
fn mappings(profile: &Profile, st: &mut Strings) -> (Vec<PMapping>, Vec<u64>) {
    let mut order: Vec<usize> = (0..profile.mappings().len()).collect();
    order.sort_by_key(|&i| profile.mappings()[i].path.starts_with('['));
    let mut mapping_id = vec![0u64; order.len()];
    for (pos, &i) in order.iter().enumerate() {
        mapping_id[i] = pos as u64 + 1;
    }
    let mapping = order
        .iter()
        .map(|&i| (i, &profile.mappings()[i]))
        .map(|(i, m)| PMapping {
            id: mapping_id[i],
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename: st.get(&m.path),
            build_id: m
                .build_id
                .as_ref()
                .map(|b| st.get(&b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
                .unwrap_or(0),
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        })
        .collect();
    (mapping, mapping_id)
}

/// The functions, and each frame's function id. One function per (name, file);
/// the frame table may hold the same function more than once (with other lines or
/// kinds).
fn functions(profile: &Profile, st: &mut Strings) -> (Vec<PFunction>, Vec<u64>) {
    let mut functions: Vec<PFunction> = Vec::new();
    let mut function_ids: HashMap<(i64, i64), u64> = HashMap::new();
    let frame_function = profile
        .frames()
        .iter()
        .map(|f| {
            let name = st.get(&match f.kind {
                FrameKind::Kernel => format!("{} [kernel]", f.name),
                FrameKind::Jit => format!("{} [jit]", f.name),
                FrameKind::Python => format!("{} [python]", f.name),
                _ => f.name.clone(),
            });
            let file = f.file.as_deref().map(|p| st.get(p)).unwrap_or(0);
            *function_ids.entry((name, file)).or_insert_with(|| {
                let id = functions.len() as u64 + 1;
                functions.push(PFunction {
                    id,
                    name,
                    system_name: name,
                    filename: file,
                });
                id
            })
        })
        .collect();
    (functions, frame_function)
}

/// The locations, each with its lines innermost (inlined) first, as pprof wants.
fn locations(profile: &Profile, mapping_id: &[u64], frame_function: &[u64]) -> Vec<PLocation> {
    profile
        .locations()
        .iter()
        .enumerate()
        .map(|(i, l)| PLocation {
            id: i as u64 + 1,
            mapping_id: l.mapping.map_or(0, |m| mapping_id[m as usize]),
            address: l.address,
            line: l
                .frames
                .iter()
                .rev()
                .map(|&f| Line {
                    function_id: frame_function[f as usize],
                    line: i64::from(profile.frame(f).line.unwrap_or(0)),
                })
                .collect(),
        })
        .collect()
}

/// The samples with their values, pid/tid/comm labels and string labels (the
/// profile's and the process's, [`crate::labels`]), leaf location first.
/// With three columns, an off-CPU sample's time goes in the third (`off_cpu`) and
/// its count of waits nowhere: `samples` counts the perf event's samples.
fn samples(profile: &Profile, columns: usize, st: &mut Strings) -> Vec<PSample> {
    let (k_pid, k_tid, k_comm) = (st.get("pid"), st.get("tid"), st.get("comm"));
    let num = |key, n: u32| Label {
        key,
        str: 0,
        num: i64::from(n),
    };
    profile
        .samples
        .iter()
        .filter(|s| s.weight > 0 || s.count > 0)
        .map(|s| {
            // pprof values are signed: past i64::MAX they saturate, not turn negative.
            let v = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            let value = match columns {
                3 if profile.is_off_cpu(s) => vec![0, 0, v(s.weight)],
                3 => vec![v(s.count), v(s.weight), 0],
                2 => vec![v(s.count), v(s.weight)],
                _ => vec![v(s.weight)],
            };
            let comm = Label {
                key: k_comm,
                str: st.get(&s.comm),
                num: 0,
            };
            // threads are kept apart only when asked (tid 0: the process's)
            let mut label = if s.tid != 0 {
                vec![num(k_pid, s.pid), num(k_tid, s.tid), comm]
            } else {
                vec![num(k_pid, s.pid), comm]
            };
            for (k, v) in profile.sample_labels(s.pid) {
                if !crate::labels::RESERVED.contains(&k) {
                    label.push(Label {
                        key: st.get(k),
                        str: st.get(v),
                        num: 0,
                    });
                }
            }
            PSample {
                location_id: s.stack.iter().rev().map(|&l| u64::from(l) + 1).collect(),
                value,
                label,
            }
        })
        .collect()
}

/// Writes the profile as gzipped protobuf.
pub fn write<W: Write>(profile: &Profile, out: W) -> Result<(), Error> {
    let bytes = to_proto(profile).encode_to_vec();
    // Go's runtime/pprof compresses at BestSpeed too: profiles are written often.
    let mut gz = GzEncoder::new(out, Compression::fast());
    gz.write_all(&bytes)?;
    gz.finish()?.flush()?;
    Ok(())
}

/// The most a compressed profile may expand to when read: a gzip bomb is refused
/// here rather than allowed to take gigabytes. A daemon's window is far smaller.
pub const MAX_DECOMPRESSED: u64 = 256 << 20;

/// Reads a gzipped (or plain) pprof profile, as flamebpf writes them, back into a
/// profile: what `flamebpf query` merges windows from. Refuses a profile that
/// expands past [`MAX_DECOMPRESSED`].
pub fn read(bytes: &[u8]) -> Result<Profile, Error> {
    let mut raw = Vec::new();
    let data: &[u8] = if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(bytes)
            .take(MAX_DECOMPRESSED + 1)
            .read_to_end(&mut raw)?;
        if raw.len() as u64 > MAX_DECOMPRESSED {
            return Err(bad(&format!(
                "it expands to more than {} MiB",
                MAX_DECOMPRESSED >> 20
            )));
        }
        &raw
    } else {
        bytes
    };
    let p = PProfile::decode(data)
        .map_err(|e| Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    from_proto(&p)
}

fn bad(what: &str) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        what.to_string(),
    ))
}

/// Turns a decoded pprof message into a profile.
pub fn from_proto(p: &PProfile) -> Result<Profile, Error> {
    let s = |i: i64| -> Result<&str, Error> {
        p.string_table
            .get(i as usize)
            .map(String::as_str)
            .ok_or_else(|| bad("a string index is out of range"))
    };
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| Ok((s(t.r#type)?, s(t.unit)?)))
        .collect::<Result<_, Error>>()?;
    // (samples, weight) columns: flamebpf writes [samples, event] or [samples],
    // or [samples, cpu, off_cpu] with --off-cpu (a sample weighs in one of the two).
    let off_cpu = matches!(
        types.as_slice(),
        [("samples", _), ("cpu", _), ("off_cpu", _)]
    );
    let (count_col, weight_col) = match types.as_slice() {
        [("samples", _), _] => (Some(0), 1),
        _ if off_cpu => (Some(0), 1),
        [_] => (None, 0),
        _ => return Err(bad("not a flamebpf profile: unexpected sample types")),
    };
    let (event, unit) = match types.get(weight_col) {
        Some(("cpu", "nanoseconds")) => ("cpu-clock".to_string(), "ns"),
        Some(("samples", _)) => ("samples".to_string(), "samples"),
        Some((t, _)) => (t.to_string(), "events"),
        None => return Err(bad("no sample types")),
    };
    let period_is_freq = unit == "ns" && p.period > 0;
    let mut profile = Profile::new(Meta {
        target: p
            .comment
            .first()
            .map(|&c| s(c))
            .transpose()?
            .unwrap_or("")
            .to_string(),
        event,
        unit: unit.into(),
        frequency: period_is_freq.then(|| 1_000_000_000 / p.period as u64),
        period: (!period_is_freq && p.period > 0 && unit == "events").then_some(p.period as u64),
        start: std::time::UNIX_EPOCH + Duration::from_nanos(p.time_nanos.max(0) as u64),
        duration: Duration::from_nanos(p.duration_nanos.max(0) as u64),
        off_cpu,
    });
    let mut mappings = HashMap::new();
    for m in &p.mapping {
        let build_id = s(m.build_id)?;
        let id = profile.intern_mapping(Mapping {
            path: s(m.filename)?.to_string(),
            build_id: (!build_id.is_empty()).then(|| {
                (0..build_id.len() / 2)
                    .filter_map(|i| build_id.get(2 * i..2 * i + 2))
                    .filter_map(|h| u8::from_str_radix(h, 16).ok())
                    .collect()
            }),
            start: m.memory_start,
            limit: m.memory_limit,
            offset: m.file_offset,
        });
        mappings.insert(m.id, id);
    }
    let functions: HashMap<u64, &PFunction> = p.function.iter().map(|f| (f.id, f)).collect();
    let mut locations = HashMap::new();
    for l in &p.location {
        let n = l.line.len();
        let mut frames = Vec::with_capacity(n);
        // pprof lists the innermost (inlined) function first; frames go outermost first
        for (i, line) in l.line.iter().enumerate().rev() {
            let f = functions
                .get(&line.function_id)
                .ok_or_else(|| bad("a line names no function"))?;
            let full = s(f.name)?;
            let (name, kind) = if full == crate::OFF_CPU || full == crate::RUNQUEUE {
                (full, FrameKind::OffCpu)
            } else if let Some(n) = full.strip_suffix(" [kernel]") {
                (n, FrameKind::Kernel)
            } else if let Some(n) = full.strip_suffix(" [jit]") {
                (n, FrameKind::Jit)
            } else if let Some(n) = full.strip_suffix(" [python]") {
                (n, FrameKind::Python)
            } else if i + 1 < n {
                (full, FrameKind::Inline)
            } else {
                (full, FrameKind::User)
            };
            let file = s(f.filename)?;
            frames.push(profile.intern(Frame {
                name: name.to_string(),
                kind,
                file: (!file.is_empty()).then(|| file.to_string()),
                line: (line.line > 0).then_some(line.line as u32),
            }));
        }
        let id = profile.intern_location(Location {
            mapping: mappings.get(&l.mapping_id).copied(),
            address: l.address,
            frames,
        });
        locations.insert(l.id, id);
    }
    for sample in &p.sample {
        let mut pid = 0;
        let mut tid = 0;
        let mut comm = String::new();
        let mut labels = crate::Labels::new();
        for label in &sample.label {
            match s(label.key)? {
                "pid" => pid = label.num as u32,
                "tid" => tid = label.num as u32,
                "comm" => comm = s(label.str)?.to_string(),
                key if label.str != 0 => {
                    labels.push((key.to_string(), s(label.str)?.to_string()));
                }
                _ => {}
            }
        }
        // string labels are the process's: the first sample of a pid tells
        // them (a window writes the same on all of a process's samples)
        if !labels.is_empty() {
            profile.process_labels.entry(pid).or_insert(labels);
        }
        let value = |col: usize| sample.value.get(col).copied().unwrap_or(0).max(0) as u64;
        let stack = sample
            .location_id
            .iter()
            .rev()
            .map(|id| {
                locations
                    .get(id)
                    .copied()
                    .ok_or_else(|| bad("a sample names no location"))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        profile.samples.push(Sample {
            pid,
            tid,
            comm,
            stack,
            count: count_col.map_or(value(weight_col), value),
            weight: if off_cpu {
                value(1).saturating_add(value(2))
            } else {
                value(weight_col)
            },
        });
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_keep_their_ranges_and_build_ids() {
        let mut p = Profile::new(Meta::default());
        let m = p.intern_mapping(Mapping {
            path: "/bin/demo".into(),
            build_id: Some(vec![0xab, 0xcd, 0x01]),
            start: 0x5555_0000_1000,
            limit: 0x5555_0000_9000,
            offset: 0x1000,
        });
        let f = p.intern(Frame::named("main", FrameKind::User));
        let l = p.intern_location(Location {
            mapping: Some(m),
            address: 0x5555_0000_1234,
            frames: vec![f],
        });
        p.samples.push(Sample {
            pid: 1,
            tid: 0,
            comm: "demo".into(),
            stack: vec![l],
            count: 1,
            weight: 10,
        });
        let proto = to_proto(&p);
        let pm = &proto.mapping[0];
        assert_eq!(
            (pm.memory_start, pm.memory_limit, pm.file_offset),
            (0x5555_0000_1000, 0x5555_0000_9000, 0x1000)
        );
        assert_eq!(proto.string_table[pm.build_id as usize], "abcd01");
        assert_eq!(proto.location[0].address, 0x5555_0000_1234);
        let back = from_proto(&proto).unwrap();
        assert_eq!(back.mappings(), p.mappings());
        let loc = back.location(back.samples[0].stack[0]);
        assert_eq!(back.mappings()[0].file_offset(loc.address), 0x1234);
    }

    #[test]
    fn string_labels_go_on_every_sample_and_come_back_per_process() {
        let mut p = Profile::new(Meta::default());
        let l = p.frame_location(Frame::named("main", FrameKind::User));
        for pid in [1, 2] {
            p.samples.push(Sample {
                pid,
                tid: 0,
                comm: "demo".into(),
                stack: vec![l],
                count: 1,
                weight: 10,
            });
        }
        p.labels = vec![("host_name".into(), "box".into())];
        p.process_labels.insert(
            2,
            vec![
                ("service_name".into(), "api".into()),
                ("container_id".into(), "c0ffee".into()),
                ("comm".into(), "not a label".into()),
            ],
        );
        let proto = to_proto(&p);
        let labels = |i: usize| -> Vec<(String, String)> {
            proto.sample[i]
                .label
                .iter()
                .filter(|l| l.str != 0)
                .map(|l| {
                    let s = |i: i64| proto.string_table[i as usize].clone();
                    (s(l.key), s(l.str))
                })
                .collect()
        };
        assert_eq!(
            labels(0),
            [
                ("comm".into(), "demo".into()),
                ("host_name".into(), "box".into())
            ]
        );
        assert_eq!(
            labels(1),
            [
                ("comm".into(), "demo".into()),
                ("host_name".into(), "box".into()),
                ("service_name".into(), "api".into()),
                ("container_id".into(), "c0ffee".into()),
            ]
        );
        let back = from_proto(&proto).unwrap();
        assert_eq!(
            back.sample_labels(2),
            [
                ("host_name", "box"),
                ("service_name", "api"),
                ("container_id", "c0ffee")
            ]
        );
        assert_eq!(back.sample_labels(1), [("host_name", "box")]);
    }

    #[test]
    fn a_build_id_that_is_not_hex_is_read_without_panicking() {
        let mut p = to_proto(&Profile::new(Meta::default()));
        p.string_table.push("aé".into());
        p.string_table.push("/x".into());
        let n = p.string_table.len() as i64;
        p.mapping.push(PMapping {
            id: 1,
            memory_start: 0,
            memory_limit: 10,
            file_offset: 0,
            filename: n - 1,
            build_id: n - 2,
            has_functions: true,
            has_filenames: false,
            has_line_numbers: false,
            has_inline_frames: false,
        });
        assert!(from_proto(&p).is_ok());
    }
}
