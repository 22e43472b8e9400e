//! Shared by the benchmarks: CPU accounting and fakes in a child process
//! (so their CPU is not counted as outreach's).

use std::path::Path;
use std::time::Duration;

/// CPU seconds (user + system) of this process so far.
#[allow(dead_code)]
pub fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// The number after `key` in a /proc file such as `status` or `io` (0 if
/// absent or unreadable).
#[allow(dead_code)]
pub fn proc_field(file: impl AsRef<Path>, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[allow(dead_code)]
/// What this process's escrow helpers (`outreach escrow` children) have
/// used so far.
#[derive(Default)]
pub struct Helpers {
    pub cpu_secs: f64,
    pub write_bytes: u64,
    pub peak_rss_kib: u64,
}

#[allow(dead_code)]
pub fn escrow_helpers() -> Helpers {
    let me = std::process::id().to_string();
    let mut out = Helpers::default();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(stat) = std::fs::read_to_string(p.join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let cmdline = std::fs::read(p.join("cmdline")).unwrap_or_default();
        let is_helper = cmdline.split(|b| *b == 0).any(|a| a == b"escrow");
        if f.get(1) != Some(&me.as_str()) || !is_helper {
            continue;
        }
        out.cpu_secs +=
            (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / 100.0;
        out.write_bytes += proc_field(p.join("io"), "write_bytes:");
        out.peak_rss_kib += proc_field(p.join("status"), "VmHWM:");
    }
    out
}

/// A child process that goes away with the benchmark, even on a panic.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Start this benchmark binary again with `--fake PORT_FILE` and return it
/// with the base URL it serves on.
pub fn spawn_fake(dir: &Path) -> (Child, String) {
    let port_file = dir.join("port");
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--fake")
        .arg(&port_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = Child(child);
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file)
            && !p.is_empty()
        {
            break p;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (child, format!("http://127.0.0.1:{port}"))
}
