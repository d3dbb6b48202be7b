//! Folded stacks as pprof profiles (`profile.proto`, gzipped), the format
//! `go tool pprof` and profile stores read. The first frame of each folded
//! stack is the process: it becomes the sample's `process` label, and the
//! rest its locations, leaf first. Names are all there is (no addresses):
//! the single mapping says its functions are already named, so pprof does
//! not try to symbolize.

use std::{collections::HashMap, io::Write as _};

use anyhow::{Context, Result};
use flate2::{Compression, write::GzEncoder};
use prost::Message as _;
use tracer_core::report::folded::Folded;

/// What the values of a profile measure.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// On-CPU samples taken at `hz`: counted, and as CPU time.
    Cpu { hz: u64 },
    /// Off-CPU blocked time, folded in microseconds.
    OffCpu,
}

/// A gzipped pprof profile of `folded`, covering `duration_ns` from
/// `start_unix_ns`.
pub fn encode(
    folded: &Folded,
    kind: Kind,
    start_unix_ns: i64,
    duration_ns: i64,
) -> Result<Vec<u8>> {
    let profile = build(folded, kind, start_unix_ns, duration_ns);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&profile.encode_to_vec())
        .and_then(|()| gz.try_finish())
        .context("compressing a pprof profile")?;
    gz.finish().context("compressing a pprof profile")
}

fn build(folded: &Folded, kind: Kind, start_unix_ns: i64, duration_ns: i64) -> proto::Profile {
    let mut b = Builder::default();
    let mut profile = proto::Profile {
        time_nanos: start_unix_ns,
        duration_nanos: duration_ns,
        ..Default::default()
    };
    b.string(""); // string_table[0] must be the empty string
    let (sample_types, period, scale): (&[(&str, &str)], i64, Scale) = match kind {
        Kind::Cpu { hz } => {
            let period = 1_000_000_000 / hz.max(1) as i64;
            (
                &[("samples", "count"), ("cpu", "nanoseconds")],
                period,
                Scale::CountAndTime(period),
            )
        }
        Kind::OffCpu => (&[("offcpu", "nanoseconds")], 1, Scale::MicrosToNanos),
    };
    profile.sample_type = sample_types
        .iter()
        .map(|(t, u)| b.value_type(t, u))
        .collect();
    // The period is of the last value: CPU time per sample, or 1 ns.
    profile.period_type = profile.sample_type.last().cloned();
    profile.period = period;
    let process_key = b.string("process");
    let mut processes: Vec<&str> = Vec::new();
    for (stack, count) in folded.stacks() {
        let mut frames = stack.split(';');
        let Some(process) = frames.next() else {
            continue;
        };
        if !processes.contains(&process) {
            processes.push(process);
        }
        let mut location_id: Vec<u64> = frames.map(|f| b.location(f)).collect();
        location_id.reverse(); // pprof lists the leaf first
        let value = match scale {
            Scale::CountAndTime(period) => vec![count as i64, count as i64 * period],
            Scale::MicrosToNanos => vec![count as i64 * 1000],
        };
        profile.sample.push(proto::Sample {
            location_id,
            value,
            label: vec![proto::Label {
                key: process_key,
                str: b.string(process),
                ..Default::default()
            }],
        });
    }
    // pprof names its saved file after the main mapping: the process, when one.
    let file = match processes.as_slice() {
        [one] => (*one).to_string(),
        _ => "traced-processes".to_string(),
    };
    profile.mapping = vec![proto::Mapping {
        id: 1,
        filename: b.string(&file),
        has_functions: true,
        ..Default::default()
    }];
    profile.location = b.locations;
    profile.function = b.functions;
    profile.string_table = b.strings;
    profile
}

#[derive(Clone, Copy)]
enum Scale {
    /// Samples, and samples times the period in nanoseconds.
    CountAndTime(i64),
    MicrosToNanos,
}

/// Interns strings, and a location and function per frame name.
#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    locations: Vec<proto::Location>,
    functions: Vec<proto::Function>,
    location_ids: HashMap<String, u64>,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), id);
        id
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.string(ty),
            unit: self.string(unit),
        }
    }

    /// One location per distinct frame, with a function of that name.
    fn location(&mut self, frame: &str) -> u64 {
        if let Some(&id) = self.location_ids.get(frame) {
            return id;
        }
        let name = self.string(frame);
        let id = self.locations.len() as u64 + 1;
        self.functions.push(proto::Function {
            id,
            name,
            system_name: name,
            ..Default::default()
        });
        self.locations.push(proto::Location {
            id,
            mapping_id: 1,
            line: vec![proto::Line {
                function_id: id,
                ..Default::default()
            }],
            ..Default::default()
        });
        self.location_ids.insert(frame.to_string(), id);
        id
    }
}

/// The messages of pprof's `profile.proto` (github.com/google/pprof,
/// `proto/profile.proto`), field numbers as there: declared with prost's
/// derive so that building needs no protoc.
#[allow(clippy::doc_markdown)]
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    #[allow(clippy::struct_excessive_bools)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use flate2::read::GzDecoder;

    use super::*;

    fn decode(bytes: &[u8]) -> proto::Profile {
        let mut raw = Vec::new();
        GzDecoder::new(bytes).read_to_end(&mut raw).expect("gzip");
        proto::Profile::decode(raw.as_slice()).expect("protobuf")
    }

    #[test]
    fn stacks_become_leaf_first_samples_labelled_with_their_process() {
        let mut folded = Folded::default();
        folded.add(&["api", "main.main", "main.handler"], 3);
        folded.add(&["api", "main.main"], 1);
        let p = decode(&encode(&folded, Kind::Cpu { hz: 100 }, 7, 10_000_000_000).expect("encode"));
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        assert_eq!(p.period, 10_000_000);
        assert_eq!(p.sample.len(), 2);
        let name_of = |loc: u64| {
            let l = &p.location[(loc - 1) as usize];
            s(p.function[(l.line[0].function_id - 1) as usize].name).to_string()
        };
        let handler = p
            .sample
            .iter()
            .find(|x| x.location_id.len() == 2)
            .expect("the deeper stack");
        assert_eq!(name_of(handler.location_id[0]), "main.handler");
        assert_eq!(name_of(handler.location_id[1]), "main.main");
        assert_eq!(handler.value, vec![3, 30_000_000]);
        assert_eq!(s(handler.label[0].key), "process");
        assert_eq!(s(handler.label[0].str), "api");
        // One location per distinct frame.
        assert_eq!(p.location.len(), 2);
    }

    #[test]
    fn off_cpu_microseconds_are_nanoseconds() {
        let mut folded = Folded::default();
        folded.add(&["api", "runtime.gopark"], 250);
        let p = decode(&encode(&folded, Kind::OffCpu, 0, 1).expect("encode"));
        assert_eq!(p.sample[0].value, vec![250_000]);
        assert_eq!(p.sample_type.len(), 1);
    }
}
