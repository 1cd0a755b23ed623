//! Sending one request to one backend, bounded in time and in what is read
//! back: tonic for OTLP over gRPC, reqwest for OTLP over HTTP and Pyroscope,
//! both on the backend's own single-threaded tokio runtime (a backend's requests
//! are sent one at a time, in order, so nothing needs more).
//!
//! Every attempt has a deadline (connecting included), and a response body is
//! read up to [`MAX_RESPONSE`] at most: a stalled or hostile backend costs its
//! own thread some waiting and nothing else. Redirects are not followed (they
//! would carry the credentials elsewhere).

use std::io::Write as _;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use super::endpoint::{Endpoint, Protocol};
use super::pyroscope::PushRequest;
use super::Settings;

/// The most of a response body read (an acknowledgement is a few bytes; an error
/// message a few hundred).
pub const MAX_RESPONSE: usize = 64 << 10;
/// Connecting gives up after this (or the request's deadline, if shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What is sent for a window.
pub enum Payload {
    /// OTLP, over gRPC or HTTP.
    Otlp(ExportProfilesServiceRequest),
    /// Pyroscope's push.
    Push(PushRequest),
}

impl Payload {
    /// The encoded request's size, before any transport compression.
    pub fn len(&self) -> usize {
        match self {
            Payload::Otlp(r) => r.encoded_len(),
            Payload::Push(r) => r.encoded_len(),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged; with a note when the backend kept only part of it.
    Acked(Option<String>),
    /// Refused for what it is (malformed, too large): sending it again would not
    /// help, so it is given up on.
    Rejected(String),
    /// Not acknowledged (down, overloaded, unauthorized, timed out): retried.
    Retry(String),
}

enum Client {
    Grpc(ProfilesServiceClient<Channel>),
    Http(reqwest::Client),
}

/// A backend's connection and runtime.
pub struct Sender {
    endpoint: Endpoint,
    runtime: tokio::runtime::Runtime,
    client: Client,
    auth: super::auth::Source,
    tenant: Option<String>,
}

impl Sender {
    /// Sets up the client; connects on the first send.
    pub fn new(endpoint: &Endpoint, settings: &Settings) -> Result<Sender, String> {
        let fail = |e: &dyn std::fmt::Display| format!("--export {}: {e}", endpoint.shown);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(&e))?;
        let timeout = settings.timeout;
        let client = match endpoint.protocol {
            Protocol::OtlpGrpc => {
                let mut ep = Channel::from_shared(endpoint.url.to_string())
                    .map_err(|e| fail(&e))?
                    .connect_timeout(CONNECT_TIMEOUT.min(timeout))
                    .timeout(timeout);
                if endpoint.tls() {
                    let mut tls = ClientTlsConfig::new().with_native_roots();
                    if let Some(ca) = &settings.ca {
                        tls = tls.ca_certificate(Certificate::from_pem(&ca.pem));
                    }
                    ep = ep.tls_config(tls).map_err(|e| fail(&e))?;
                }
                // the lazy channel's worker task lives on this runtime
                let _entered = runtime.enter();
                let client = ProfilesServiceClient::new(ep.connect_lazy())
                    .max_decoding_message_size(MAX_RESPONSE)
                    .send_compressed(CompressionEncoding::Gzip);
                Client::Grpc(client)
            }
            Protocol::OtlpHttp | Protocol::Pyroscope => {
                let tls = super::tls::client_config(settings.ca.as_ref()).map_err(|e| fail(&e))?;
                let client = reqwest::Client::builder()
                    .use_preconfigured_tls(tls)
                    .connect_timeout(CONNECT_TIMEOUT.min(timeout))
                    .timeout(timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    // as over gRPC (tonic has no proxy support): the URL is where
                    // profiles and credentials go, whatever HTTPS_PROXY says
                    .no_proxy()
                    .user_agent(concat!("flamebpf/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| fail(&e))?;
                Client::Http(client)
            }
        };
        Ok(Sender {
            endpoint: endpoint.clone(),
            runtime,
            client,
            auth: settings.auth.clone(),
            tenant: settings.tenant.clone(),
        })
    }

    /// Sends one request and waits for its answer, for `deadline` at most.
    pub fn send(&mut self, payload: Payload, deadline: Duration) -> Outcome {
        let authorization = match self.auth.current() {
            Ok(a) => a.header(),
            // the file may be back (rewritten) by the next attempt
            Err(e) => return Outcome::Retry(e),
        };
        let attempt = async {
            match (&mut self.client, payload) {
                (Client::Grpc(c), Payload::Otlp(r)) => {
                    grpc(c, r, authorization.as_deref(), self.tenant.as_deref()).await
                }
                (Client::Http(c), p) => {
                    http(
                        c,
                        &self.endpoint,
                        p,
                        authorization.as_deref(),
                        self.tenant.as_deref(),
                    )
                    .await
                }
                (Client::Grpc(_), Payload::Push(_)) => {
                    Outcome::Rejected("a Pyroscope push cannot go over gRPC".into())
                }
            }
        };
        self.runtime.block_on(async {
            tokio::time::timeout(deadline, attempt)
                .await
                .unwrap_or_else(|_| Outcome::Retry(format!("no answer within {deadline:?}")))
        })
    }
}

async fn grpc(
    client: &mut ProfilesServiceClient<Channel>,
    r: ExportProfilesServiceRequest,
    authorization: Option<&str>,
    tenant: Option<&str>,
) -> Outcome {
    let mut request = tonic::Request::new(r);
    let headers = [("authorization", authorization), ("x-scope-orgid", tenant)];
    for (name, value) in headers {
        if let Some(v) = value {
            match v.parse() {
                Ok(v) => {
                    request.metadata_mut().insert(name, v);
                }
                Err(_) => return Outcome::Rejected(format!("{name}: not a header value")),
            }
        }
    }
    match client.export(request).await {
        Ok(answer) => partial(&answer.into_inner()),
        Err(status) => {
            // a transport error says "tcp connect error"; its causes say why
            let mut message = status.message().to_string();
            let mut cause = std::error::Error::source(&status);
            while let Some(c) = cause {
                let text = c.to_string();
                if !message.contains(&text) {
                    message.push_str(": ");
                    message.push_str(&text);
                }
                cause = c.source();
            }
            let why = format!("gRPC {:?}: {}", status.code(), clip(&message));
            match status.code() {
                tonic::Code::InvalidArgument => Outcome::Rejected(why),
                _ => Outcome::Retry(why),
            }
        }
    }
}

async fn http(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    payload: Payload,
    authorization: Option<&str>,
    tenant: Option<&str>,
) -> Outcome {
    let mut request = client.post(endpoint.url.clone());
    let body = match &payload {
        Payload::Otlp(r) => {
            // what the OTLP/HTTP spec allows, and profiles compress 5-10 times
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let zipped = gz.write_all(&r.encode_to_vec()).and_then(|()| gz.finish());
            let Ok(zipped) = zipped else {
                return Outcome::Retry("compressing the request failed".into());
            };
            request = request
                .header("Content-Type", "application/x-protobuf")
                .header("Content-Encoding", "gzip");
            zipped
        }
        Payload::Push(r) => {
            request = request
                .header("Content-Type", "application/proto")
                .header("Connect-Protocol-Version", "1");
            r.encode_to_vec()
        }
    };
    if let Some(a) = authorization {
        request = request.header("Authorization", a);
    }
    if let Some(t) = tenant {
        request = request.header("X-Scope-OrgID", t);
    }
    let mut response = match request.body(body).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Retry(describe(&e)),
    };
    let status = response.status();
    let mut answer = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE - answer.len();
                answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if answer.len() == MAX_RESPONSE {
                    break;
                }
            }
            Ok(None) => break,
            // the status came: a body cut short does not change it
            Err(_) => break,
        }
    }
    if status.is_success() {
        return match payload {
            Payload::Otlp(_) if !answer.is_empty() => {
                match ExportProfilesServiceResponse::decode(answer.as_slice()) {
                    Ok(r) => partial(&r),
                    Err(_) => Outcome::Acked(None),
                }
            }
            _ => Outcome::Acked(None),
        };
    }
    let why = format!(
        "HTTP {}: {}",
        status.as_u16(),
        clip(&String::from_utf8_lossy(&answer))
    );
    match status.as_u16() {
        400 | 413 | 415 | 422 => Outcome::Rejected(why),
        _ => Outcome::Retry(why),
    }
}

/// An OTLP answer: all kept, or the part rejected.
fn partial(r: &ExportProfilesServiceResponse) -> Outcome {
    match &r.partial_success {
        Some(p) if p.rejected_profiles > 0 || !p.error_message.is_empty() => {
            Outcome::Acked(Some(format!(
                "{} profiles rejected: {}",
                p.rejected_profiles,
                clip(&p.error_message)
            )))
        }
        _ => Outcome::Acked(None),
    }
}

/// reqwest's error with its causes (the useful part, "connection refused", is
/// the innermost).
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    clip(&out)
}

/// A backend's words, one line, at most 200 characters.
fn clip(s: &str) -> String {
    let line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    line.trim().to_string()
}
