//! A window's pprof as OTLP profiles (`opentelemetry.proto.profiles.v1development`,
//! the messages of the `opentelemetry-proto` crate): one request per window, its
//! tables in the request's shared dictionary.
//!
//! pprof lists ids; OTLP's dictionary tables are indexed, with a zero value at
//! index 0 of each, so every pprof id is mapped to an index here. pprof has one
//! value per sample type in each sample; this OTLP version has one sample type
//! per profile, so a window with `samples/count` and `cpu/nanoseconds` becomes two
//! profiles over the same stacks. Per-sample labels become attributes, under the
//! semantic conventions' names where there is one (pid → `process.pid`, tid →
//! `thread.id`, comm → `thread.name`); the others keep their pprof keys.

use std::collections::HashMap;
use std::io::Read;

use flamegraphs::pprof::PProfile;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// The semantic conventions' attribute for a mapping's GNU build id.
pub const BUILD_ID_ATTRIBUTE: &str = "process.executable.build_id.gnu";

/// Decodes a window file: gzipped pprof, bounded as `flamebpf query` bounds it.
pub fn read_pprof(bytes: &[u8]) -> Result<PProfile, String> {
    let mut raw = Vec::new();
    let data: &[u8] = if bytes.starts_with(&[0x1f, 0x8b]) {
        let limit = flamegraphs::pprof::MAX_DECOMPRESSED;
        flate2::read::MultiGzDecoder::new(bytes)
            .take(limit + 1)
            .read_to_end(&mut raw)
            .map_err(|e| format!("not gzip: {e}"))?;
        if raw.len() as u64 > limit {
            return Err(format!("expands past {} MiB", limit >> 20));
        }
        &raw
    } else {
        bytes
    };
    PProfile::decode(data).map_err(|e| format!("not pprof: {e}"))
}

/// The attribute key OTLP gets for a pprof label key.
fn attribute_key(pprof_key: &str) -> &str {
    match pprof_key {
        "pid" => "process.pid",
        "tid" => "thread.id",
        "comm" => "thread.name",
        other => other,
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Value {
    Str(String),
    Int(i64),
}

/// The dictionary being filled, each table deduplicated.
struct Dictionary {
    d: otlp::ProfilesDictionary,
    strings: HashMap<String, i32>,
    attributes: HashMap<(i32, Value), i32>,
    stacks: HashMap<Vec<i32>, i32>,
}

impl Dictionary {
    fn new() -> Dictionary {
        let mut d = Dictionary {
            d: otlp::ProfilesDictionary {
                mapping_table: vec![otlp::Mapping::default()],
                location_table: vec![otlp::Location::default()],
                function_table: vec![otlp::Function::default()],
                link_table: vec![otlp::Link::default()],
                string_table: Vec::new(),
                attribute_table: vec![otlp::KeyValueAndUnit::default()],
                stack_table: vec![otlp::Stack::default()],
            },
            strings: HashMap::new(),
            attributes: HashMap::new(),
            stacks: HashMap::new(),
        };
        d.string("");
        d
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.d.string_table.len() as i32;
        self.d.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn attribute(&mut self, key: &str, value: Value) -> i32 {
        let k = self.string(key);
        if let Some(&i) = self.attributes.get(&(k, value.clone())) {
            return i;
        }
        let i = self.d.attribute_table.len() as i32;
        let v = match &value {
            Value::Str(s) => any_value::Value::StringValue(s.clone()),
            Value::Int(n) => any_value::Value::IntValue(*n),
        };
        self.d.attribute_table.push(otlp::KeyValueAndUnit {
            key_strindex: k,
            value: Some(AnyValue { value: Some(v) }),
            unit_strindex: 0,
        });
        self.attributes.insert((k, value), i);
        i
    }

    fn stack(&mut self, locations: Vec<i32>) -> i32 {
        if let Some(&i) = self.stacks.get(&locations) {
            return i;
        }
        let i = self.d.stack_table.len() as i32;
        self.d.stack_table.push(otlp::Stack {
            location_indices: locations.clone(),
        });
        self.stacks.insert(locations, i);
        i
    }
}

/// A window's pprof as one export request from `service_name`.
pub fn request(p: &PProfile, service_name: &str) -> Result<ExportProfilesServiceRequest, String> {
    let s = |i: i64| -> Result<&str, String> {
        usize::try_from(i)
            .ok()
            .and_then(|i| p.string_table.get(i))
            .map(String::as_str)
            .ok_or_else(|| format!("string index {i} out of range"))
    };
    let mut d = Dictionary::new();

    let mut mapping_index = HashMap::new();
    for m in &p.mapping {
        let filename_strindex = d.string(s(m.filename)?);
        let build_id = s(m.build_id)?;
        let attribute_indices = if build_id.is_empty() {
            Vec::new()
        } else {
            vec![d.attribute(BUILD_ID_ATTRIBUTE, Value::Str(build_id.to_string()))]
        };
        mapping_index.insert(m.id, d.d.mapping_table.len() as i32);
        d.d.mapping_table.push(otlp::Mapping {
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename_strindex,
            attribute_indices,
        });
    }

    let mut function_index = HashMap::new();
    for f in &p.function {
        let function = otlp::Function {
            name_strindex: d.string(s(f.name)?),
            system_name_strindex: d.string(s(f.system_name)?),
            filename_strindex: d.string(s(f.filename)?),
            start_line: 0,
        };
        function_index.insert(f.id, d.d.function_table.len() as i32);
        d.d.function_table.push(function);
    }

    let mut location_index = HashMap::new();
    for l in &p.location {
        let mapping_index = match l.mapping_id {
            0 => 0,
            id => *mapping_index
                .get(&id)
                .ok_or_else(|| format!("location {} names no mapping {id}", l.id))?,
        };
        let lines = l
            .line
            .iter()
            .map(|line| {
                Ok(otlp::Line {
                    function_index: *function_index.get(&line.function_id).ok_or_else(|| {
                        format!("location {} names no function {}", l.id, line.function_id)
                    })?,
                    line: line.line,
                    column: 0,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        location_index.insert(l.id, d.d.location_table.len() as i32);
        d.d.location_table.push(otlp::Location {
            mapping_index,
            address: l.address,
            lines,
            attribute_indices: Vec::new(),
        });
    }

    // Stacks and attributes once per pprof sample, shared by every sample type.
    let mut shaped = Vec::with_capacity(p.sample.len());
    for sample in &p.sample {
        let locations = sample
            .location_id
            .iter()
            .map(|id| {
                location_index
                    .get(id)
                    .copied()
                    .ok_or_else(|| format!("a sample names no location {id}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let stack_index = d.stack(locations);
        let mut attribute_indices = Vec::with_capacity(sample.label.len());
        for label in &sample.label {
            let key = attribute_key(s(label.key)?).to_string();
            let value = if label.str != 0 {
                Value::Str(s(label.str)?.to_string())
            } else {
                Value::Int(label.num)
            };
            attribute_indices.push(d.attribute(&key, value));
        }
        shaped.push((stack_index, attribute_indices));
    }

    let period_type = match &p.period_type {
        Some(t) => Some(otlp::ValueType {
            type_strindex: d.string(s(t.r#type)?),
            unit_strindex: d.string(s(t.unit)?),
        }),
        None => None,
    };
    let mut profiles = Vec::with_capacity(p.sample_type.len());
    for (column, t) in p.sample_type.iter().enumerate() {
        let sample_type = otlp::ValueType {
            type_strindex: d.string(s(t.r#type)?),
            unit_strindex: d.string(s(t.unit)?),
        };
        let samples = p
            .sample
            .iter()
            .zip(&shaped)
            .filter_map(|(sample, (stack_index, attrs))| {
                let v = sample.value.get(column).copied().unwrap_or(0);
                (v != 0).then(|| otlp::Sample {
                    stack_index: *stack_index,
                    attribute_indices: attrs.clone(),
                    link_index: 0,
                    values: vec![v],
                    timestamps_unix_nano: Vec::new(),
                })
            })
            .collect();
        profiles.push(otlp::Profile {
            sample_type: Some(sample_type),
            samples,
            time_unix_nano: u64::try_from(p.time_nanos).unwrap_or(0),
            duration_nano: u64::try_from(p.duration_nanos).unwrap_or(0),
            period_type,
            period: p.period,
            profile_id: profile_id(p.time_nanos, p.duration_nanos, column),
            dropped_attributes_count: 0,
            original_payload_format: String::new(),
            original_payload: Vec::new(),
            attribute_indices: Vec::new(),
        });
    }

    let resource = Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(service_name.to_string())),
            }),
            key_strindex: 0,
        }],
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    };
    Ok(ExportProfilesServiceRequest {
        resource_profiles: vec![otlp::ResourceProfiles {
            resource: Some(resource),
            scope_profiles: vec![otlp::ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: "flamebpf".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                profiles,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
        dictionary: Some(d.d),
    })
}

/// A profile's id: the same for a window sent twice (a retry whose
/// acknowledgement was lost), so a backend can deduplicate it; never all zeroes,
/// which the protocol calls invalid.
fn profile_id(time: i64, duration: i64, column: usize) -> Vec<u8> {
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in time
            .to_le_bytes()
            .iter()
            .chain(&duration.to_le_bytes())
            .chain(&(column as u64).to_le_bytes())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let mut id = [fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142)]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect::<Vec<u8>>();
    if id.iter().all(|&b| b == 0) {
        id[0] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use flamegraphs::pprof::{Label, Line, PFunction, PLocation, PMapping, PSample, ValueType};
    use std::collections::BTreeMap;

    /// A pprof like the daemon's: two sample types, three functions in one
    /// mapping with a build id, pid/comm labels; ids deliberately not dense.
    fn pprof() -> PProfile {
        let strings = [
            "",
            "samples",
            "count",
            "cpu",
            "nanoseconds",
            "main",
            "work",
            "/bin/app",
            "abcd",
            "pid",
            "comm",
            "app",
            "inlined",
        ];
        let f = |id, name| PFunction {
            id,
            name,
            system_name: name,
            filename: 0,
        };
        let loc = |id, address, funcs: &[u64]| PLocation {
            id,
            mapping_id: 3,
            address,
            line: funcs
                .iter()
                .map(|&function_id| Line {
                    function_id,
                    line: 7,
                })
                .collect(),
        };
        let sample = |location_id: Vec<u64>, value: Vec<i64>| PSample {
            location_id,
            value,
            label: vec![
                Label {
                    key: 9,
                    str: 0,
                    num: 42,
                },
                Label {
                    key: 10,
                    str: 11,
                    num: 0,
                },
            ],
        };
        PProfile {
            sample_type: vec![
                ValueType { r#type: 1, unit: 2 },
                ValueType { r#type: 3, unit: 4 },
            ],
            sample: vec![
                sample(vec![20, 10], vec![3, 3_000]),
                sample(vec![10], vec![1, 1_000]),
                sample(vec![20, 10], vec![0, 5]),
            ],
            mapping: vec![PMapping {
                id: 3,
                memory_start: 0x1000,
                memory_limit: 0x9000,
                file_offset: 0,
                filename: 7,
                build_id: 8,
                ..PMapping::default()
            }],
            // location 20: `inlined` inlined into `work`
            location: vec![loc(10, 0x1100, &[5]), loc(20, 0x1200, &[7, 6])],
            function: vec![f(5, 5), f(6, 6), f(7, 12)],
            string_table: strings.iter().map(|s| s.to_string()).collect(),
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 1_000_000_000,
            period_type: Some(ValueType { r#type: 3, unit: 4 }),
            period: 10_000_000,
            ..PProfile::default()
        }
    }

    /// Each profile's samples as folded stacks (root first) with their totals.
    fn folded(r: &ExportProfilesServiceRequest, profile: usize) -> BTreeMap<String, i64> {
        let d = r.dictionary.as_ref().unwrap();
        let s = |i: i32| d.string_table[i as usize].as_str();
        let p = &r.resource_profiles[0].scope_profiles[0].profiles[profile];
        let mut out = BTreeMap::new();
        for sample in &p.samples {
            let stack = &d.stack_table[sample.stack_index as usize];
            let mut names = Vec::new();
            for &l in stack.location_indices.iter().rev() {
                for line in d.location_table[l as usize].lines.iter().rev() {
                    names.push(s(
                        d.function_table[line.function_index as usize].name_strindex
                    ));
                }
            }
            *out.entry(names.join(";")).or_default() += sample.values[0];
        }
        out
    }

    #[test]
    fn every_sample_type_keeps_the_stacks_and_totals() {
        let r = request(&pprof(), "app-svc").unwrap();
        let p = &r.resource_profiles[0].scope_profiles[0].profiles;
        assert_eq!(p.len(), 2, "one profile per sample type");
        let samples = folded(&r, 0);
        assert_eq!(
            samples,
            BTreeMap::from([("main".into(), 1), ("main;work;inlined".into(), 3)]),
            "the zero count of the third sample is left out, the stacks root first"
        );
        let cpu = folded(&r, 1);
        assert_eq!(cpu["main;work;inlined"], 3_005);
        assert_eq!(cpu.values().sum::<i64>(), 4_005);
        let d = r.dictionary.as_ref().unwrap();
        let s = |i: i32| d.string_table[i as usize].as_str();
        assert_eq!(s(p[1].sample_type.unwrap().type_strindex), "cpu");
        assert_eq!(s(p[0].sample_type.unwrap().unit_strindex), "count");
        assert_eq!(
            (p[1].period, p[1].duration_nano),
            (10_000_000, 1_000_000_000)
        );
        assert_ne!(p[0].profile_id, p[1].profile_id);
        assert_eq!(p[0].profile_id.len(), 16);
    }

    #[test]
    fn tables_start_with_their_zero_value_and_labels_become_attributes() {
        let r = request(&pprof(), "app-svc").unwrap();
        let d = r.dictionary.as_ref().unwrap();
        assert_eq!(d.string_table[0], "");
        assert_eq!(d.mapping_table[0], otlp::Mapping::default());
        assert_eq!(d.location_table[0], otlp::Location::default());
        assert_eq!(d.function_table[0], otlp::Function::default());
        assert_eq!(d.stack_table[0], otlp::Stack::default());
        assert_eq!(d.attribute_table[0], otlp::KeyValueAndUnit::default());
        assert_eq!(d.stack_table.len(), 3, "two distinct stacks, shared");
        let m = &d.mapping_table[1];
        assert_eq!((m.memory_start, m.memory_limit), (0x1000, 0x9000));
        let attr = |i: i32| {
            let a = &d.attribute_table[i as usize];
            (
                d.string_table[a.key_strindex as usize].clone(),
                a.value.clone().unwrap().value.unwrap(),
            )
        };
        assert_eq!(
            attr(m.attribute_indices[0]),
            (
                BUILD_ID_ATTRIBUTE.to_string(),
                any_value::Value::StringValue("abcd".into())
            )
        );
        let sample = &r.resource_profiles[0].scope_profiles[0].profiles[0].samples[0];
        let attrs: Vec<_> = sample.attribute_indices.iter().map(|&i| attr(i)).collect();
        assert_eq!(
            attrs,
            [
                ("process.pid".into(), any_value::Value::IntValue(42)),
                (
                    "thread.name".into(),
                    any_value::Value::StringValue("app".into())
                )
            ]
        );
        let resource = r.resource_profiles[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
    }

    #[test]
    fn a_window_file_round_trips_and_bad_indices_are_refused() {
        let p = pprof();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &p.encode_to_vec()).unwrap();
        let back = read_pprof(&gz.finish().unwrap()).unwrap();
        assert_eq!(back, p);
        assert!(read_pprof(&[0x1f, 0x8b, 1, 2]).is_err());
        let mut bad = p.clone();
        bad.sample[0].location_id.push(99);
        assert!(request(&bad, "x").unwrap_err().contains("no location 99"));
        let mut bad = p;
        bad.function[0].name = 1000;
        assert!(request(&bad, "x").unwrap_err().contains("out of range"));
    }
}
