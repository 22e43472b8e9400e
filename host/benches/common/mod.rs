//! Shared by the benchmarks: CPU accounting and fakes in a child process
//! (so their CPU is not counted as outreach's).

use std::path::Path;
use std::time::Duration;

/// CPU seconds (user + system) of this process so far.
pub fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
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
