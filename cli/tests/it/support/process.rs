//! The real `switchyard` binary as a child process.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct Proc {
    pub child: Child,
    pub port: u16,
    /// Its `/healthz`, `/readyz`, `/metrics`.
    pub ops_port: u16,
    log: std::path::PathBuf,
}

impl Proc {
    /// Starts `switchyard serve <service>` with `envs`, logging to `<dir>/<service>.log`.
    pub fn serve(service: &str, port: u16, dir: &Path, envs: &[(&str, String)]) -> Proc {
        let file_name = service.replace('/', "-");
        let log = dir.join(format!(
            "{file_name}-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{file_name}.log")))
            .expect("log file");
        let ops_port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", service])
            .env("PORT", port.to_string())
            .env("OPS_PORT", ops_port.to_string())
            .env("HOST", "127.0.0.1")
            .env("DATA_DIR", dir.join("data"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("clone")))
            .stderr(Stdio::from(file));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn switchyard");
        Proc {
            child,
            port,
            ops_port,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ops_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ops_port)
    }

    /// Waits until `/readyz` answers 200 (or the process exits).
    pub async fn wait_ready(&mut self, client: &super::http::Client) {
        let deadline = Instant::now() + super::DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("process exited early: {status}");
            }
            if let Some(a) = client.try_get(&format!("{}/healthz", self.ops_url())).await
                && a.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "process on port {} not ready",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long [`run`] lets the binary run: a command, or a service expected to refuse to
/// start, that is still running by then fails the test instead of hanging it.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// Runs the binary to completion with `envs` and `args`; returns (status, stderr). Panics
/// if it is still running after [`RUN_DEADLINE`] (it is killed first).
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run switchyard");
    let mut pipe = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut pipe, &mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let deadline = Instant::now() + RUN_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for switchyard") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = reader.join().unwrap_or_default();
            panic!("switchyard {args:?} still running after {RUN_DEADLINE:?}: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap_or_default())
}

/// Runs the binary to completion with `envs` and `args`; returns (status, stdout, stderr).
pub fn run_output(args: &[&str], envs: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run switchyard");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
