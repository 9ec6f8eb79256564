//! A real Kubernetes API server for end-to-end tests, from the shared
//! `k8s-testenv` tool (etcd, kube-apiserver, controller-manager and
//! scheduler v1.20 on loopback), and `kubectl` against it.
//!
//! ```no_run
//! let env = kestrel_e2e::k8s::TestEnv::up("/tmp/kestrel-k8s").unwrap();
//! let out = env.kubectl(&["get", "namespaces"]).unwrap();
//! assert!(out.contains("default"));
//! ```

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the tool is: `K8S_TESTENV` or `../shared/tools/k8s-testenv` from
/// the repository root.
pub fn tool() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("K8S_TESTENV") {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join("../shared/tools/k8s-testenv");
    if p.is_file() {
        return Ok(p);
    }
    bail!("k8s-testenv not found at {} (set K8S_TESTENV)", p.display())
}

/// Polls `f` every 500 ms until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// PASS/FAIL rows of an end-to-end run, printed as they come.
#[derive(Debug, Default)]
pub struct Report {
    /// (check, passed, what was seen).
    pub rows: Vec<(String, bool, String)>,
}

impl Report {
    /// Records and prints one check.
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        println!("{} {name}: {detail}", if ok { "PASS" } else { "FAIL" });
        self.rows.push((name.to_string(), ok, detail));
    }

    /// How many checks failed.
    pub fn failed(&self) -> usize {
        self.rows.iter().filter(|r| !r.1).count()
    }
}

/// A running control plane; brought down on drop.
pub struct TestEnv {
    dir: PathBuf,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// kubectl and helm.
    pub bin: PathBuf,
    keep: bool,
}

impl TestEnv {
    /// Installs the tool's binaries when missing (cached, minutes the
    /// first time), then starts a fresh control plane in `dir`.
    pub fn up(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::start(dir.into(), false)
    }

    /// [`up`](Self::up) with containerd and a kubelet too (`up --node`):
    /// pods really run, on the node `testenv-node`.
    pub fn up_node(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::start(dir.into(), true)
    }

    /// Imports an image archive into the node's containerd (`load-image`).
    pub fn load_image(&self, tarball: &Path) -> Result<()> {
        let st = Command::new(tool()?)
            .arg("load-image")
            .arg(tarball)
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status()
            .context("k8s-testenv load-image")?;
        if !st.success() {
            bail!("k8s-testenv load-image {} failed ({st})", tarball.display());
        }
        Ok(())
    }

    /// `helm ARGS` against this server: stdout, or an error with stderr.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(self.bin.join("helm"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .context("helm")?;
        if !out.status.success() {
            bail!(
                "helm {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn start(dir: PathBuf, node: bool) -> Result<Self> {
        let t = tool()?;
        let install = Command::new(&t)
            .arg("install")
            .stdout(Stdio::null())
            .status()
            .context("k8s-testenv install")?;
        if !install.success() {
            bail!("k8s-testenv install failed ({install})");
        }
        let mut up = Command::new(&t);
        up.arg("up");
        if node {
            up.arg("--node");
        }
        let out = up
            .arg(&dir)
            .stderr(Stdio::inherit())
            .output()
            .context("k8s-testenv up")?;
        if !out.status.success() {
            bail!("k8s-testenv up failed ({})", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let var = |name: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix("export "))
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| PathBuf::from(v.trim_matches(|c| c == '"' || c == '\'')))
        };
        let kubeconfig = var("KUBECONFIG").context("`up` printed no KUBECONFIG")?;
        let bin = var("K8S_TESTENV_BIN").context("`up` printed no K8S_TESTENV_BIN")?;
        Ok(TestEnv {
            dir,
            kubeconfig,
            bin,
            keep: std::env::var_os("KESTREL_KEEP_K8S").is_some(),
        })
    }

    /// `kubectl ARGS` against this server: stdout, or an error with stderr
    /// (without kubectl's version-skew warning).
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_stdin(args, None)
    }

    /// `kubectl ARGS` with `input` on stdin (`-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        let out = self.run_kubectl(args, input)?;
        if !out.0 {
            bail!("kubectl {}: {}", args.join(" "), out.2.trim());
        }
        Ok(out.1)
    }

    /// `kubectl ARGS` that may fail: (success, stdout, stderr).
    pub fn run_kubectl(
        &self,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<(bool, String, String)> {
        use std::io::Write as _;
        let mut child = Command::new(self.bin.join("kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("kubectl")?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let stderr: String = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.contains("version difference") && !l.contains("WARNING: version"))
            .map(|l| format!("{l}\n"))
            .collect();
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        ))
    }

    /// The environment's directory (logs under `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops kube-apiserver (SIGTERM, as a restart or an upgrade does),
    /// leaves it down for `down`, then starts it again with the same command
    /// line and log, recorded in the environment's pid list so `down` stops
    /// it. etcd keeps running, so every object survives. Returns the seconds
    /// from the stop until `/readyz` answered again.
    pub fn restart_apiserver(&self, down: Duration) -> Result<f64> {
        use std::os::unix::ffi::OsStringExt as _;
        let pid = self
            .pids()?
            .into_iter()
            .filter(|(n, _)| n == "kube-apiserver")
            .map(|(_, p)| p)
            .next_back()
            .context("no kube-apiserver in the pid list")?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        let args: Vec<std::ffi::OsString> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| std::ffi::OsString::from_vec(a.to_vec()))
            .collect();
        let stopped = std::time::Instant::now();
        // SAFETY: kill with a pid read from the environment's own record.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            if stopped.elapsed() > Duration::from_secs(20) {
                // SAFETY: as above.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(down);
        // detached like `up` starts it: its own session, not our child
        let pidf = self.dir.join("state/.kube-apiserver.restart.pid");
        let _ = std::fs::remove_file(&pidf);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("logs/kube-apiserver.log"))?;
        let status = Command::new("setsid")
            .arg("-f")
            .arg("bash")
            .arg("-c")
            .arg(r#"echo $$ > "$0"; cd /; exec "$@""#)
            .arg(&pidf)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("setsid")?;
        if !status.success() {
            bail!("kube-apiserver did not start again ({status})");
        }
        let t = std::time::Instant::now();
        let new_pid: u32 = loop {
            if let Some(p) = std::fs::read_to_string(&pidf)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            if t.elapsed() > Duration::from_secs(5) {
                bail!("kube-apiserver did not start again");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = std::fs::remove_file(&pidf);
        let stat = std::fs::read_to_string(format!("/proc/{new_pid}/stat"))?;
        let start = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(19))
            .context("start time of the new kube-apiserver")?
            .to_string();
        {
            use std::io::Write as _;
            let mut pids = std::fs::OpenOptions::new()
                .append(true)
                .open(self.dir.join("state/pids"))?;
            writeln!(pids, "kube-apiserver {new_pid} {start}")?;
        }
        while t.elapsed() < Duration::from_secs(120) {
            if let Ok((true, out, _)) = self.run_kubectl(&["get", "--raw", "/readyz"], None) {
                if out.trim() == "ok" {
                    return Ok(stopped.elapsed().as_secs_f64());
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!("kube-apiserver not ready 120 s after its restart")
    }

    /// The processes `up` recorded: (component, pid).
    pub fn pids(&self) -> Result<Vec<(String, u32)>> {
        let text = std::fs::read_to_string(self.dir.join("state/pids"))?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.parse().ok()?))
            })
            .collect())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("KESTREL_KEEP_K8S: left {} up", self.dir.display());
            return;
        }
        if let Ok(t) = tool() {
            let _ = Command::new(t)
                .arg("down")
                .arg(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
