//! Pyroscope's Push API: the window's pprof file as it is in the store, in
//! `raw_profile`, under the series labels Pyroscope requires (`__name__` for the
//! profile type, `service_name`). Samples keep their own pprof labels (pid, comm
//! …), which Pyroscope reads from the profile itself.
//!
//! No maintained crate carries these messages, and the file is tiny: they mirror
//! grafana/pyroscope `api/push/v1/push.proto` and `api/types/v1/types.proto`
//! (`LabelPair`) on its main branch (read November 2026), field numbers
//! included. Sent over Connect's unary protocol: a POST of the protobuf message to
//! `/push.v1.PusherService/Push` with `Content-Type: application/proto`.

use prost::Message;

/// `push.v1.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    /// Profiles with their labels.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.RawProfileSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct RawProfileSeries {
    /// The series' labels.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    /// Its profiles.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

/// `push.v1.RawSample`.
#[derive(Clone, PartialEq, Message)]
pub struct RawSample {
    /// A pprof profile, gzipped or not.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    /// An id for the profile (`ID` upstream).
    #[prost(string, tag = "2")]
    pub id: String,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    /// The label's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// The profile type Pyroscope files CPU profiles under (Go's and the eBPF
/// agent's are `process_cpu` too, so they show side by side).
pub const PROFILE_NAME: &str = "process_cpu";

/// The request for one window: its file's bytes, untouched.
pub fn request(raw_profile: Vec<u8>, service_name: &str, id: String) -> PushRequest {
    let label = |name: &str, value: &str| LabelPair {
        name: name.into(),
        value: value.into(),
    };
    PushRequest {
        series: vec![RawProfileSeries {
            labels: vec![
                label("__name__", PROFILE_NAME),
                label("service_name", service_name),
            ],
            samples: vec![RawSample { raw_profile, id }],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_numbers_are_pyroscopes() {
        let r = request(vec![0x1f, 0x8b], "svc", "w1".into());
        let bytes = r.encode_to_vec();
        // series(1) { labels(1) { name(1) "__name__" … } … samples(2) { raw_profile(1) … } }
        assert_eq!(&bytes[..1], &[0x0a]);
        assert!(bytes.windows(10).any(|w| w == b"\x0a\x08__name__"));
        assert!(bytes.windows(4).any(|w| w == b"\x0a\x02\x1f\x8b"));
        assert_eq!(PushRequest::decode(bytes.as_slice()).unwrap(), r);
    }
}
