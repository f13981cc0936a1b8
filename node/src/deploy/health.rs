//! Step 6 of a deploy: the health command, run against the switched version with a timeout
//! that kills its whole process group.

use super::error::{io_err, DeployError};
use super::fs::{unique, RemoveOnDrop};
use super::{Deployer, HEALTH_LOG, OUTPUT_TAIL};
use efa_domain::model::ids::ServiceId;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tracing::warn;

impl Deployer {
    /// Runs the health command. `Ok(None)` means healthy, `Ok(Some(reason))` unhealthy.
    pub(super) fn run_health(
        &self,
        command: &str,
        service: &ServiceId,
        version: &str,
        vdir: &Path,
        sdir: &Path,
    ) -> Result<Option<String>, DeployError> {
        // Output goes to a file rather than pipes: a grandchild that outlives the shell
        // would keep a pipe open and block us, a file never does.
        let log_path = sdir.join(format!("{HEALTH_LOG}{}.log", unique()));
        let log = File::create(&log_path).map_err(io_err("create", &log_path))?;
        let _remove_log = RemoveOnDrop(Some(log_path.clone()));
        let start_err = |source| DeployError::HealthCommandStart {
            command: command.to_string(),
            service: service.to_string(),
            version: version.to_string(),
            source,
        };
        let stdout = log.try_clone().map_err(start_err)?;
        let stderr = log.try_clone().map_err(start_err)?;
        let deploy_dir = std::path::absolute(vdir).unwrap_or_else(|_| vdir.to_path_buf());
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(vdir)
            .env("EFA_SERVICE", service.as_str())
            .env("EFA_VERSION", version)
            .env("EFA_DEPLOY_DIR", &deploy_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Own process group, so a timeout kills everything the command started.
            .process_group(0)
            .spawn()
            .map_err(start_err)?;
        // A timeout too large to represent means "wait forever".
        let deadline = Instant::now().checked_add(self.health_timeout);
        let status: Option<ExitStatus> = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "could not poll health command; treating it as timed out");
                    break None;
                }
            }
            let pause = Duration::from_millis(20);
            match deadline {
                Some(deadline) if Instant::now() >= deadline => break None,
                Some(deadline) => std::thread::sleep(deadline.saturating_duration_since(Instant::now()).min(pause)),
                None => std::thread::sleep(pause),
            }
        };
        if status.is_none() {
            let group = format!("kill -KILL -{}", child.id());
            if let Err(e) = Command::new("sh").arg("-c").arg(group).stdin(Stdio::null()).status() {
                warn!(error = %e, "could not kill the health command's process group");
            }
            // Reap the shell so it does not linger as a zombie; errors mean it is gone.
            let _ = child.kill();
            let _ = child.wait();
        }
        let tail = read_tail(&log_path);
        Ok(match status {
            Some(s) if s.success() => None,
            Some(s) => Some(format!("health command {command:?} failed ({s}); output:\n{tail}")),
            None => Some(format!(
                "health command {command:?} timed out after {:?} and was killed; output:\n{tail}",
                self.health_timeout
            )),
        })
    }
}

/// The last [`OUTPUT_TAIL`] bytes of a log, lossily decoded.
fn read_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(OUTPUT_TAIL)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    };
    read().unwrap_or_else(|e| format!("(output unavailable: {e})"))
}
