//! Harness for end-to-end scenarios: real runc containers from Debian's
//! static busybox, each in its own cgroup (`/kestrel/<name>`), with helpers
//! to run commands inside and to tear everything down by id.
//!
//! ```no_run
//! let c = kestrel_e2e::Container::start("demo-web-1", &["sleep", "3600"]).unwrap();
//! let out = c.exec(&["sh", "-c", "echo hi"]).unwrap();
//! assert_eq!(out.stdout, "hi\n");
//! ```
#![deny(missing_docs)]

pub mod fake_http;
pub mod k8s;
pub mod workload;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// runc's state directory for Kestrel's test containers.
pub const RUNC_ROOT: &str = "/run/kestrel-runc";
/// cgroup parent of every test container (the agent treats its children as containers).
pub const CGROUP_PARENT: &str = "kestrel";

/// What a test needs from the machine, checked up front.
///
/// `Ok(())` when the privileged tests can run. Otherwise the reason; callers
/// skip with that message, except under `CI=true`, where they must fail.
pub fn preconditions() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err("needs a kernel with BTF (/sys/kernel/btf/vmlinux)".into());
    }
    for tool in ["runc", "busybox"] {
        if which(tool).is_none() {
            return Err(format!("needs {tool} (run `make deps`)"));
        }
    }
    Ok(())
}

/// A binary built next to the running one (`target/<profile>/<name>`), or
/// an error saying to build it.
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let p = me.parent().context("binary directory")?.join(name);
    if !p.is_file() {
        bail!("{} not found: run `make build` first", p.display());
    }
    Ok(p)
}

/// Skips (returns `false`) when preconditions are missing, printing why;
/// panics instead when `CI=true`, so CI can never skip silently.
pub fn require_privileged() -> bool {
    match preconditions() {
        Ok(()) => true,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("privileged test cannot run under CI=true: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED (privileged): {why}");
            false
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The busybox binary to put in rootfs images (the static one from Debian).
fn busybox() -> Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(p).is_file() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("busybox not found: install busybox-static (make deps)")
}

/// Builds a busybox rootfs in `dir`: `/bin/busybox` plus a link per applet.
/// `extra` copies host files into `/bin` under new names (e.g. busybox as `xmrig`).
pub fn build_rootfs(dir: &Path, extra: &[(&Path, &str)]) -> Result<()> {
    for sub in [
        "bin", "proc", "sys", "dev", "etc", "tmp", "root", "var/log", "app",
    ] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("mkdir {}", dir.join(sub).display()))?;
    }
    let bb = busybox()?;
    let target = dir.join("bin/busybox");
    std::fs::copy(&bb, &target).with_context(|| format!("copy {} into rootfs", bb.display()))?;
    // the host's busybox, not the fresh copy: executing a file just written
    // fails with ETXTBSY while another thread's fork still holds its
    // write descriptor (tests start containers in parallel)
    let list = Command::new(&bb)
        .arg("--list")
        .output()
        .context("busybox --list")?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)
                .with_context(|| format!("link {applet}"))?;
        }
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\n")?;
    for (src, name) in extra {
        let dst = dir.join("bin").join(name);
        let _ = std::fs::remove_file(&dst);
        std::fs::copy(src, &dst).with_context(|| format!("copy {} as {name}", src.display()))?;
    }
    Ok(())
}

/// Output of a command run in a container.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status code (-1 if killed by a signal).
    pub status: i32,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

/// A running runc container, deleted on drop.
pub struct Container {
    name: String,
    bundle: PathBuf,
}

fn runc() -> Command {
    let mut c = Command::new("runc");
    c.arg("--root").arg(RUNC_ROOT);
    c
}

impl Container {
    /// Starts a container named `name` running `args` (a fresh busybox rootfs).
    pub fn start(name: &str, args: &[&str]) -> Result<Self> {
        Self::start_with(name, args, &[])
    }

    /// Like [`Container::start`], with extra files copied into `/bin`.
    pub fn start_with(name: &str, args: &[&str], extra: &[(&Path, &str)]) -> Result<Self> {
        let bundle = std::env::temp_dir().join(format!("kestrel-bundle-{name}"));
        // a previous run may have left the same name behind
        let _ = runc()
            .args(["delete", "-f", name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&bundle);
        build_rootfs(&bundle.join("rootfs"), extra)?;
        let status = Command::new("runc")
            .args(["spec"])
            .current_dir(&bundle)
            .status()
            .context("runc spec")?;
        if !status.success() {
            bail!("runc spec failed in {}", bundle.display());
        }
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path)?)?;
        cfg["process"]["terminal"] = false.into();
        cfg["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
        cfg["process"]["env"] = serde_json::json!(["PATH=/bin", "HOME=/root"]);
        cfg["root"]["readonly"] = false.into();
        cfg["hostname"] = name.into();
        cfg["linux"]["cgroupsPath"] = format!("/{CGROUP_PARENT}/{name}").into();
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg)?)?;
        std::fs::create_dir_all(RUNC_ROOT)?;
        let log = std::fs::File::create(bundle.join("container.log"))?;
        let status = runc()
            .args(["run", "-d", "--pid-file"])
            .arg(bundle.join("init.pid"))
            .arg(name)
            .current_dir(&bundle)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("runc run")?;
        if !status.success() {
            let log = std::fs::read_to_string(bundle.join("container.log")).unwrap_or_default();
            bail!("runc run {name} failed: {log}");
        }
        Ok(Container {
            name: name.to_string(),
            bundle,
        })
    }

    /// The container's name (= its id for runc and for Kestrel).
    pub fn id(&self) -> &str {
        &self.name
    }

    /// Host pid of the container's init process.
    pub fn init_pid(&self) -> Result<u32> {
        let s = std::fs::read_to_string(self.bundle.join("init.pid"))?;
        Ok(s.trim().parse()?)
    }

    /// The container's cgroup path relative to the v2 root (`/kestrel/<name>`).
    pub fn cgroup_path(&self) -> String {
        format!("/{CGROUP_PARENT}/{}", self.name)
    }

    /// Runs a command inside and waits for it.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let out = runc()
            .arg("exec")
            .arg(&self.name)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("runc exec {} {args:?}", self.name))?;
        Ok(Output {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Starts a command inside without waiting (returns the `runc exec` child).
    pub fn spawn(&self, args: &[&str]) -> Result<std::process::Child> {
        runc()
            .arg("exec")
            .arg(&self.name)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("runc exec {} {args:?}", self.name))
    }

    /// Path of a file in the container's rootfs, seen from the host.
    pub fn rootfs_path(&self, inner: &str) -> PathBuf {
        self.bundle
            .join("rootfs")
            .join(inner.trim_start_matches('/'))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = runc()
            .args(["kill", &self.name, "KILL"])
            .stderr(Stdio::null())
            .status();
        let deleted = runc()
            .args(["delete", "-f", &self.name])
            .stderr(Stdio::null())
            .status();
        if !deleted.map(|s| s.success()).unwrap_or(false) {
            eprintln!("warning: could not delete container {}", self.name);
        }
        let _ = std::fs::remove_dir_all(&self.bundle);
    }
}
