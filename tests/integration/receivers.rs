//! Backends for the export tests, built from the official definitions: a tonic
//! `ProfilesService` server from opentelemetry-proto's generated code (OTLP over
//! gRPC), and one HTTP server taking OTLP over HTTP (`ExportProfilesServiceRequest`)
//! and Pyroscope's push (`PushRequest`, declared here from Pyroscope's push.proto
//! apart from flamebpf's own, so the two readings check each other). Both can
//! require a token and TLS, be stopped (connections refused) and started again on
//! the same port.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_server::{
    ProfilesService, ProfilesServiceServer,
};
use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use prost::Message;

/// `push.v1.PushRequest` (grafana/pyroscope api/push/v1/push.proto).
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.RawProfileSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

/// `push.v1.RawSample`.
#[derive(Clone, PartialEq, Message)]
pub struct RawSample {
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    #[prost(string, tag = "2")]
    pub id: String,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// What a backend accepted.
#[derive(Clone, Debug)]
pub enum Got {
    /// OTLP, over gRPC or HTTP.
    Otlp(ExportProfilesServiceRequest),
    /// A Pyroscope push.
    Push(PushRequest),
}

/// A request that arrived, accepted or not.
#[derive(Clone, Debug)]
pub struct Arrival {
    /// The message, when it was accepted.
    pub got: Option<Got>,
    /// Its path (HTTP) or "grpc".
    pub path: String,
    /// X-Scope-OrgID, if sent.
    pub tenant: Option<String>,
}

/// What a backend saw, in order.
#[derive(Clone, Default)]
pub struct Log(pub Arc<Mutex<Vec<Arrival>>>);

impl Log {
    fn push(&self, a: Arrival) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(a);
    }

    /// All arrivals so far.
    pub fn all(&self) -> Vec<Arrival> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The accepted messages on `path` ("grpc" for gRPC).
    pub fn accepted(&self, path: &str) -> Vec<Got> {
        self.all()
            .into_iter()
            .filter(|a| a.path == path)
            .filter_map(|a| a.got)
            .collect()
    }

    /// Requests refused (bad credentials).
    pub fn refused(&self) -> usize {
        self.all().iter().filter(|a| a.got.is_none()).count()
    }
}

/// A certificate and key, PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Identity {
    /// A self-signed certificate for localhost and 127.0.0.1.
    pub fn self_signed() -> Identity {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        Identity {
            cert_pem: c.cert.pem(),
            key_pem: c.signing_key.serialize_pem(),
        }
    }
}

/// How a receiver checks requests.
#[derive(Clone, Default)]
pub struct Policy {
    /// The Authorization header required, if any.
    pub authorization: Option<String>,
    /// TLS with this identity.
    pub tls: Option<Identity>,
}

struct Svc {
    log: Log,
    policy: Policy,
}

#[tonic::async_trait]
impl ProfilesService for Svc {
    async fn export(
        &self,
        request: tonic::Request<ExportProfilesServiceRequest>,
    ) -> Result<tonic::Response<ExportProfilesServiceResponse>, tonic::Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let tenant = header("x-scope-orgid");
        if self.policy.authorization.is_some()
            && header("authorization") != self.policy.authorization
        {
            self.log.push(Arrival {
                got: None,
                path: "grpc".into(),
                tenant,
            });
            return Err(tonic::Status::unauthenticated("bad token"));
        }
        self.log.push(Arrival {
            got: Some(Got::Otlp(request.into_inner())),
            path: "grpc".into(),
            tenant,
        });
        Ok(tonic::Response::new(
            ExportProfilesServiceResponse::default(),
        ))
    }
}

/// A running receiver; stopped when dropped.
pub struct Receiver {
    pub port: u16,
    stop: Arc<AtomicBool>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// The OTLP gRPC receiver on `port` (0: any).
    pub fn grpc(port: u16, policy: Policy, log: Log) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                let mut builder = tonic::transport::Server::builder();
                if let Some(id) = &policy.tls {
                    let identity = tonic::transport::Identity::from_pem(&id.cert_pem, &id.key_pem);
                    builder = builder
                        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                        .unwrap();
                }
                let svc = ProfilesServiceServer::new(Svc { log, policy })
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                    .max_decoding_message_size(64 << 20);
                let _ = builder
                    .add_service(svc)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        Receiver {
            port,
            stop: Arc::new(AtomicBool::new(false)),
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The HTTP receiver (OTLP/HTTP and Pyroscope push) on `port` (0: any).
    pub fn http(port: u16, policy: Policy, log: Log) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let tls = policy.tls.as_ref().map(server_tls);
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                        match &tls {
                            Some(config) => {
                                let Ok(conn) = rustls::ServerConnection::new(Arc::clone(config))
                                else {
                                    continue;
                                };
                                let mut stream = rustls::StreamOwned::new(conn, s);
                                serve(&mut stream, &policy, &log);
                            }
                            None => {
                                let mut s = s;
                                serve(&mut s, &policy, &log);
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver {
            port,
            stop,
            shutdown: None,
            thread: Some(thread),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn server_tls(id: &Identity) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

/// One request: head, body, answer; the connection is closed after it.
fn serve(s: &mut (impl Read + Write), policy: &Policy, log: &Log) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let (head_len, path, headers) = loop {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut h = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut h);
        if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            break (len, req.path.unwrap_or("").to_string(), headers);
        }
        if buf.len() > 64 << 10 {
            return;
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_len..].to_vec();
    while body.len() < length {
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        body.extend_from_slice(&chunk[..n]);
    }
    let tenant = header("x-scope-orgid");
    let answer = |s: &mut dyn Write, status: &str, body: &[u8]| {
        let _ = write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: application/proto\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(body);
        let _ = s.flush();
    };
    if policy.authorization.is_some() && header("authorization") != policy.authorization {
        log.push(Arrival {
            got: None,
            path,
            tenant,
        });
        answer(s, "401 Unauthorized", b"{\"code\":\"unauthenticated\"}");
        return;
    }
    if header("content-encoding").as_deref() == Some("gzip") {
        let mut plain = Vec::new();
        if flate2::read::GzDecoder::new(body.as_slice())
            .read_to_end(&mut plain)
            .is_err()
        {
            answer(s, "400 Bad Request", b"bad gzip");
            return;
        }
        body = plain;
    }
    let got = if path.ends_with("/v1development/profiles") {
        ExportProfilesServiceRequest::decode(body.as_slice())
            .ok()
            .map(Got::Otlp)
    } else if path.ends_with("/push.v1.PusherService/Push") {
        PushRequest::decode(body.as_slice()).ok().map(Got::Push)
    } else {
        answer(s, "404 Not Found", b"");
        return;
    };
    let Some(got) = got else {
        answer(s, "400 Bad Request", b"undecodable");
        return;
    };
    log.push(Arrival {
        got: Some(got),
        path,
        tenant,
    });
    let reply = ExportProfilesServiceResponse::default().encode_to_vec();
    answer(s, "200 OK", &reply);
}
