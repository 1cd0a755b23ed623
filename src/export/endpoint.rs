//! What an `--export` URL names: the protocol its scheme and path choose, where
//! to connect, and whether sending to it in plain text is allowed.
//!
//! The rules are explicit rather than guessed from ports: `grpc://` and `grpcs://`
//! are OTLP over gRPC (no path: gRPC names the method itself); over http(s) the
//! path's last segments say which API it is, so a prefix added by a proxy
//! (`https://gw/pyroscope/push.v1.PusherService/Push`) still works.

use std::fmt;

use reqwest::Url;

/// Where OTLP/HTTP receivers take profiles.
pub const OTLP_HTTP_PATH: &str = "/v1development/profiles";
/// Pyroscope's push method, as Connect names it.
pub const PYROSCOPE_PATH: &str = "/push.v1.PusherService/Push";

/// The protocols a window can be sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export`.
    OtlpGrpc,
    /// The same request, POSTed as protobuf.
    OtlpHttp,
    /// Pyroscope's `PusherService/Push` (Connect, protobuf).
    Pyroscope,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::OtlpGrpc => "OTLP/gRPC",
            Protocol::OtlpHttp => "OTLP/HTTP",
            Protocol::Pyroscope => "Pyroscope",
        })
    }
}

/// A checked `--export` URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As given: names the backend in messages, /metrics and its cursor.
    pub shown: String,
    /// What the client connects to (grpc:// turned into http://).
    pub url: Url,
    /// How windows are sent.
    pub protocol: Protocol,
}

impl Endpoint {
    /// Whether the connection is TLS.
    pub fn tls(&self) -> bool {
        self.url.scheme() == "https"
    }
}

/// Checks a URL; `insecure` allows plain text to a host that is not loopback.
pub fn parse(text: &str, insecure: bool) -> Result<Endpoint, String> {
    let bad = |why: &str| format!("--export {text}: {why}");
    let (grpc, rest) = match text.split_once("://") {
        Some(("grpc", rest)) => (true, format!("http://{rest}")),
        Some(("grpcs", rest)) => (true, format!("https://{rest}")),
        Some(("http" | "https", _)) => (false, text.to_string()),
        Some((scheme, _)) => {
            return Err(bad(&format!(
                "unknown scheme {scheme:?} (use grpc://, grpcs://, http:// or https://)"
            )))
        }
        None => return Err(bad("not a URL (e.g. grpc://127.0.0.1:4317)")),
    };
    let url = Url::parse(&rest).map_err(|e| bad(&e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are visible to every user (ps); use --export-basic-auth-file or FLAMEBPF_EXPORT_BASIC_AUTH"));
    }
    if url.fragment().is_some() {
        return Err(bad("a URL with a #fragment"));
    }
    let Some(host) = url.host_str().map(str::to_string) else {
        return Err(bad("no host"));
    };
    let path = url.path().trim_end_matches('/');
    let protocol = if grpc {
        if !path.is_empty() || url.query().is_some() {
            return Err(bad(
                "a gRPC URL has no path (gRPC names the method itself): grpc://HOST:PORT",
            ));
        }
        Protocol::OtlpGrpc
    } else if path.ends_with(OTLP_HTTP_PATH) {
        Protocol::OtlpHttp
    } else if path.ends_with(PYROSCOPE_PATH) {
        Protocol::Pyroscope
    } else {
        return Err(bad(&format!(
            "cannot tell the protocol: end the path with {OTLP_HTTP_PATH} (OTLP over HTTP) or {PYROSCOPE_PATH} (Pyroscope), or use grpc:// (OTLP over gRPC)"
        )));
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.scheme() == "http" && !loopback && !insecure {
        return Err(bad(&format!(
            "plain text to {host}, which is not loopback, would show profiles and credentials to the network; use {} or add --export-insecure",
            if grpc { "grpcs://" } else { "https://" }
        )));
    }
    Ok(Endpoint {
        shown: text.to_string(),
        url,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_and_path_choose_the_protocol() {
        let p = |t: &str| parse(t, false).map(|e| (e.protocol, e.url.to_string(), e.tls()));
        assert_eq!(
            p("grpc://127.0.0.1:4317").unwrap(),
            (Protocol::OtlpGrpc, "http://127.0.0.1:4317/".into(), false)
        );
        assert_eq!(
            p("grpcs://otel.example:4317").unwrap(),
            (
                Protocol::OtlpGrpc,
                "https://otel.example:4317/".into(),
                true
            )
        );
        assert_eq!(
            p("https://otel.example/v1development/profiles").unwrap().0,
            Protocol::OtlpHttp
        );
        assert_eq!(
            p("http://localhost:4040/pyro/push.v1.PusherService/Push")
                .unwrap()
                .0,
            Protocol::Pyroscope
        );
    }

    #[test]
    fn unclear_or_unsafe_urls_are_refused_with_the_reason() {
        let e = |t: &str| parse(t, false).unwrap_err();
        assert!(e("ftp://x/y").contains("unknown scheme \"ftp\""));
        assert!(e("127.0.0.1:4317").contains("not a URL"));
        assert!(e("http://127.0.0.1:4318/").contains("cannot tell the protocol"));
        assert!(e("grpc://127.0.0.1:4317/v1").contains("no path"));
        assert!(e("https://u:p@h/v1development/profiles").contains("credentials"));
        let plain = e("http://10.0.0.1:4040/push.v1.PusherService/Push");
        assert!(plain.contains("not loopback") && plain.contains("--export-insecure"));
        assert!(e("grpc://collector:4317").contains("grpcs://"));
        assert!(parse("grpc://collector:4317", true).is_ok());
        assert!(parse("http://[::1]:4318/v1development/profiles", false).is_ok());
    }
}
