//! Spawning children that cannot outlive the test process.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the
//! process. Test threads come and go, so every child is forked from one dedicated thread
//! that lives as long as the process: the children then get SIGKILL exactly when the
//! process dies, however it dies.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::{Error, Result};

type Job = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // The reply side may be gone if the caller panicked; nothing to do then.
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the testenv spawner thread");
        Mutex::new(tx)
    })
}

/// Spawns `cmd` so that it is killed when this process exits.
pub(crate) fn spawn_tied(mut cmd: Command) -> Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| Error::Spawner)?
        .send((cmd, tx))
        .map_err(|_| Error::Spawner)?;
    rx.recv()
        .map_err(|_| Error::Spawner)?
        .map_err(|e| Error::Other(format!("spawn: {e}")))
}

/// SIGTERM, then SIGKILL after `grace`; always reaps.
pub(crate) fn stop(child: &mut Child, grace: std::time::Duration) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A child process that cannot outlive its owner: stopped when dropped (SIGTERM, then
/// SIGKILL after the grace period; zero kills at once) and killed by the kernel if this
/// process dies first. Derefs to the [`Child`].
pub struct Reaper {
    child: Child,
    grace: std::time::Duration,
}

impl Reaper {
    /// Spawns `cmd` tied to this process.
    pub fn spawn(cmd: Command, grace: std::time::Duration) -> Result<Reaper> {
        Ok(Reaper {
            child: spawn_tied(cmd)?,
            grace,
        })
    }
}

impl std::ops::Deref for Reaper {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Reaper {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // An exited child is already reaped: its pid may belong to someone else now.
        if let Ok(None) = self.child.try_wait() {
            if self.grace.is_zero() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            } else {
                stop(&mut self.child, self.grace);
            }
        }
    }
}
