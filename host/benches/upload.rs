//! `cargo bench --bench upload`: a large video through the YouTube plugin.
//!
//! `outreach publish` (the release binary, a child process) uploads a
//! sparse video of `UPLOAD_BENCH_MIB` MiB (default 2048) to a loopback
//! server that speaks YouTube's resumable protocol and throws the bytes
//! away as they arrive. Reported: outreach's wall time, throughput and peak
//! resident memory (`VmHWM`, polled), against a baseline in the same run —
//! the same file streamed with reqwest from this process in one `PUT` to
//! the same server.
//!
//! Aims (issue 16): peak RSS under 100 MiB; throughput at least 0.9 of the
//! baseline.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;

#[allow(dead_code)]
mod common;

const EXE: &str = env!("CARGO_BIN_EXE_outreach");

#[derive(Default)]
struct Server {
    /// Bytes of the current upload received so far.
    received: AtomicU64,
    size: AtomicU64,
    base: std::sync::Mutex<String>,
}

/// The resumable protocol, bytes discarded as they stream in.
async fn handle(State(s): State<Arc<Server>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/youtube/v3/channels" {
        let body =
            r#"{"items":[{"id":"UCbench","snippet":{"title":"Bench","customUrl":"@bench"}}]}"#;
        return ([("content-type", "application/json")], body).into_response();
    }
    if method == "POST" {
        let size = req
            .headers()
            .get("x-upload-content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        s.size.store(size, Ordering::SeqCst);
        s.received.store(0, Ordering::SeqCst);
        let loc = format!(
            "{}/upload/youtube/v3/videos?uploadType=resumable&upload_id=bench",
            s.base.lock().unwrap()
        );
        return (StatusCode::OK, [("location", loc)], "").into_response();
    }
    let range = req
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut body = req.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                s.received.fetch_add(c.len() as u64, Ordering::SeqCst);
            }
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    let (got, size) = (
        s.received.load(Ordering::SeqCst),
        s.size.load(Ordering::SeqCst),
    );
    if range.ends_with("*") || got < size {
        if got == 0 {
            return StatusCode::PERMANENT_REDIRECT.into_response();
        }
        return Response::builder()
            .status(308)
            .header("range", format!("bytes=0-{}", got - 1))
            .body(Body::empty())
            .unwrap();
    }
    (
        StatusCode::CREATED,
        [("content-type", "application/json")],
        r#"{"kind":"youtube#video","id":"benchvideo"}"#,
    )
        .into_response()
}

fn serve(rt: &tokio::runtime::Runtime) -> (String, Arc<Server>) {
    let s = Arc::new(Server::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *s.base.lock().unwrap() = base.clone();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(s.clone())
        .layer(axum::extract::DefaultBodyLimit::disable());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, s)
}

fn sparse_video(path: &Path, size: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(b"\0\0\0\x18ftypisom\0\0\x02\0isommp41")
        .unwrap();
    f.set_len(size).unwrap();
}

fn main() {
    let mib: u64 = std::env::var("UPLOAD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let size = mib << 20;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (base, server) = serve(&rt);
    let home = tempfile::tempdir().unwrap();
    let video = home.path().join("big.mp4");
    sparse_video(&video, size);
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    std::fs::write(
        home.path().join("outreach.toml"),
        format!(
            "[paths]\nplugins = \"{}\"\nstore = \"store\"\nidentity = \"id.txt\"\ncache = \"cache\"\n\n[limits]\npublish_timeout_ms = 3600000\nhttp_timeout_ms = 600000\n\n[platforms.youtube.endpoints]\napi = \"{base}/youtube/v3\"\nupload = \"{base}/upload/youtube/v3\"\n",
            plugins.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut c = std::process::Command::new(EXE)
            .arg("--config")
            .arg(home.path().join("outreach.toml"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        c
    };
    let out = run(&["accounts", "add", "youtube"], "bench-token")
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rounds: usize = std::env::var("UPLOAD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut peak_kib = 0;
    let client = reqwest::Client::new();
    // Alternating, so that a noisy moment does not favour one side.
    for round in 0..rounds {
        let post = home.path().join(format!("big{round}.toml"));
        std::fs::write(
            &post,
            format!("title = \"Bench {round}\"\ntext = \"bench\"\nto = [\"youtube\"]\n[[media]]\npath = \"big.mp4\"\n"),
        )
        .unwrap();
        // outreach: wall time and peak RSS (VmHWM, read until it exits).
        let start = Instant::now();
        let mut child = run(&["publish", post.to_str().unwrap()], "");
        let status_file = format!("/proc/{}/status", child.id());
        let code = loop {
            peak_kib = peak_kib.max(common::proc_field(&status_file, "VmHWM:"));
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        ours.push(start.elapsed());
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(code.success(), "outreach publish failed:\n{err}");
        assert_eq!(server.received.load(Ordering::SeqCst), size);

        // Baseline: the same file streamed with reqwest in one PUT.
        let start = Instant::now();
        rt.block_on(async {
            client
                .post(format!(
                    "{base}/upload/youtube/v3/videos?uploadType=resumable"
                ))
                .header("x-upload-content-length", size.to_string())
                .send()
                .await
                .unwrap();
            let file = tokio::fs::File::open(&video).await.unwrap();
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10);
            let r = client
                .put(format!("{base}/upload/youtube/v3/videos?upload_id=bench"))
                .header("content-range", format!("bytes 0-{}/{size}", size - 1))
                .header("content-length", size.to_string())
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
        });
        theirs.push(start.elapsed());
    }
    ours.sort();
    theirs.sort();
    let (ours, base_time) = (ours[rounds / 2], theirs[rounds / 2]);
    let mbps = |d: Duration| size as f64 / (1 << 20) as f64 / d.as_secs_f64();
    println!(
        "upload of {mib} MiB through the YouTube plugin, loopback, median of {rounds} rounds:"
    );
    println!(
        "  outreach publish   {:>8.2} s  {:>8.1} MiB/s  peak RSS {:.1} MiB (process start included)",
        ours.as_secs_f64(),
        mbps(ours),
        peak_kib as f64 / 1024.0
    );
    println!(
        "  reqwest stream     {:>8.2} s  {:>8.1} MiB/s",
        base_time.as_secs_f64(),
        mbps(base_time)
    );
    println!(
        "  throughput ratio (outreach / baseline): {:.2}  (aim ≥ 0.9); peak RSS aim < 100 MiB",
        mbps(ours) / mbps(base_time)
    );
}
