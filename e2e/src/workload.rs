//! The demo/e2e "web" workload and the seed's attack, shared by `make demo`
//! and the end-to-end tests.

use crate::Container;
use anyhow::Result;
use std::path::Path;

/// The web loop: a request log line with changing ids and timestamps, a
/// sub-shell per request, the JVM entry point with a changing
/// `--timestamp=`, and a config read. A request that carries a command
/// (`/app/cmd`, written from outside) has it run by a shell, as a command
/// injection in a web handler would: the scenario suite's attack path
/// (`[ -f ]` is a builtin, so learning never sees it; the file is read and
/// removed in the `$( )` subshell, so that the loop itself, the container's
/// init, does nothing new and the request's command is a subtree of its
/// own).
pub const WEB_LOOP: &str = r#"i=0
while true; do
  i=$((i+1))
  if [ -f /app/cmd ]; then c=$(cat /app/cmd; rm -f /app/cmd); sh -c "$c" >/dev/null 2>&1 & fi
  sh -c "echo GET /api/items?id=$i ts=$(date +%s) >> /var/log/access.log"
  java -jar /app/app.jar --timestamp=$(date +%s) >/dev/null 2>&1
  cat /etc/hostname > /dev/null
  sleep 1
done"#;

/// The miner, run as `xmrig` (busybox copied under that name).
pub const MINER: &str = "xmrig -o stratum+tcp://pool.minexmr.com:4444 -u 44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A -p x";

/// The same miner renamed `java`.
pub const RENAMED_MINER: &str = "java -o stratum+tcp://pool.xx:4444 -u wallet --donate-level 1";

/// Starts one replica of the web workload named `name` (`xmrig` and `java`
/// are busybox copies in `/bin`, so they exec as themselves).
pub fn start_web(name: &str) -> Result<Container> {
    let bb = Path::new("/bin/busybox");
    Container::start_with(
        name,
        &["sh", "-c", WEB_LOOP],
        &[(bb, "xmrig"), (bb, "java")],
    )
}

/// Runs the attack inside `c`: the miner, then the renamed miner.
pub fn attack(c: &Container) -> Result<()> {
    c.exec(&["sh", "-c", &format!("{MINER} >/dev/null 2>&1; true")])?;
    c.exec(&[
        "sh",
        "-c",
        &format!("{RENAMED_MINER} >/dev/null 2>&1; true"),
    ])?;
    Ok(())
}
