//! A WASI with no authority, so that components built by standard
//! toolchains with their default settings (componentize-js,
//! componentize-py, Rust `wasm32-wasip2`, TinyGo) load.
//!
//! Owns: the per-call WASI context — clocks and random numbers as they
//! are, empty stdin, arguments and environment, no preopened directories,
//! sockets refused, `wasi:http` linked but every request refused (a plugin
//! reaches the network only through `outreach:platform/host.send`), and
//! stdout and stderr captured (at most [`CAPTURE`] bytes per call) and
//! written to the log tagged with the plugin id, a bounded number of lines
//! per call — and which WASI interfaces a plugin may import at all
//! ([`granted`]).
//!
//! Never: gives a plugin a file, a socket, an environment variable, an
//! argument or a way to the network other than the broker.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::CallState;

/// Most bytes of stdout plus stderr kept per call; more is dropped (the
/// plugin's writes still succeed).
pub const CAPTURE: usize = 16 << 10;
/// Most log lines one call's output becomes.
const LINES: usize = 20;

/// The WASI packages a plugin may import; their functions that reach
/// outside (files, sockets, HTTP) are refused when called.
const PACKAGES: [&str; 7] = [
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:http/",
];

/// Whether import `name` is a WASI 0.2 interface the host links.
pub fn granted(name: &str) -> bool {
    PACKAGES.iter().any(|p| name.starts_with(p)) && name.contains("@0.2.")
}

/// What one call's WASI holds.
pub struct Wasi {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    hooks: Refuse,
    table: ResourceTable,
    out: Captured,
}

impl Wasi {
    pub fn new() -> Self {
        let out = Captured::default();
        let ctx = WasiCtx::builder()
            .stdout(out.clone())
            .stderr(out.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Wasi {
            ctx,
            http: WasiHttpCtx::new(),
            hooks: Refuse,
            table: ResourceTable::new(),
            out,
        }
    }

    /// Write what the plugin printed to the log, tagged with its id.
    pub fn log_output(&self, plugin: &str) {
        let bytes = std::mem::take(&mut *self.out.0.lock().expect("captured output"));
        if bytes.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        for line in lines.by_ref().take(LINES) {
            let line: String = line
                .chars()
                .take(500)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            tracing::info!(plugin, "plugin output: {line}");
        }
        let rest = lines.count();
        if rest > 0 {
            tracing::info!(plugin, "plugin output: … {rest} more lines not logged");
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.wasi.http,
            table: &mut self.wasi.table,
            hooks: &mut self.wasi.hooks,
        }
    }
}

/// `wasi:http` hooks that send nothing.
struct Refuse;

impl WasiHttpHooks for Refuse {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async {
            Err(wasmtime_wasi_http::p2::bindings::http::types::ErrorCode::HttpRequestDenied.into())
        })
    }
}

/// stdout and stderr of one call, up to [`CAPTURE`] bytes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut kept = self.0.lock().expect("captured output");
        let room = CAPTURE.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..buf.len().min(room)]);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
