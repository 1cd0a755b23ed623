//! The flags of `flamebpf continuous --export`: where windows go, and the TLS and
//! credentials used to get them there. Checked, and turned into settings, by
//! [`crate::export::Settings::from_args`] before any sampling starts.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// What `continuous` takes to ship windows to backends.
#[derive(Debug, Args, Default)]
pub struct ExportArgs {
    /// Send every window, once written to the store, to this backend; repeatable.
    /// The URL picks the protocol: grpc://HOST:PORT (grpcs:// for TLS) for OTLP
    /// profiles over gRPC; http(s)://HOST:PORT/v1development/profiles for OTLP over
    /// HTTP; http(s)://HOST:PORT/push.v1.PusherService/Push for Pyroscope. Windows
    /// not acknowledged are retried, in order, across restarts.
    #[arg(
        long = "export",
        id = "export",
        value_name = "URL",
        help_heading = "Export"
    )]
    pub urls: Vec<String>,

    /// Trust this CA (PEM) as well as the system's roots for https:// and grpcs://.
    #[arg(long, help_heading = "Export", value_name = "FILE")]
    pub export_ca: Option<PathBuf>,

    /// Send `Authorization: Bearer` with the token in this file (or set
    /// FLAMEBPF_EXPORT_TOKEN).
    #[arg(
        long,
        help_heading = "Export",
        value_name = "FILE",
        conflicts_with = "export_basic_auth_file"
    )]
    pub export_token_file: Option<PathBuf>,

    /// Send basic auth with the `user:password` in this file (or set
    /// FLAMEBPF_EXPORT_BASIC_AUTH).
    #[arg(long, help_heading = "Export", value_name = "FILE")]
    pub export_basic_auth_file: Option<PathBuf>,

    /// The tenant, sent as X-Scope-OrgID (Pyroscope, and gateways in front of
    /// multi-tenant OTLP receivers).
    #[arg(long, help_heading = "Export", value_name = "ID")]
    pub export_tenant: Option<String>,

    /// Allow plain http:// and grpc:// to hosts that are not loopback: profiles and
    /// credentials then cross the network unencrypted.
    #[arg(long, help_heading = "Export")]
    pub export_insecure: bool,

    /// Give up on one attempt to send a window after this long (connecting
    /// included); it is retried later.
    #[arg(long, help_heading = "Export", value_name = "DURATION", default_value = "10s", value_parser = super::values::parse_duration)]
    pub export_timeout: Duration,

    /// Refused: a token on the command line is visible to every user.
    #[arg(long, help_heading = "Export", value_name = "TOKEN", hide = true)]
    pub export_token: Option<String>,

    /// Refused: credentials on the command line are visible to every user.
    #[arg(
        long,
        help_heading = "Export",
        value_name = "USER:PASSWORD",
        hide = true
    )]
    pub export_basic_auth: Option<String>,
}
