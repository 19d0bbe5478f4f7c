//! One long-lived OS thread that starts engines, so `fork`/`exec` never run on the runtime.
//!
//! Two reasons it is a thread of its own. `Command::spawn` blocks its caller until the
//! child has exec'd (it reads an error pipe), which on a loaded machine can take tens of
//! milliseconds: not on our single runtime thread. And the kernel ties an engine's
//! parent-death signal to the *thread* that forked it, so that thread must live as long
//! as the process: a pool thread that retires would take its engines down with it.

use std::io;
use std::sync::mpsc;

use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::oneshot;

use super::process::{EngineCommand, EngineProcess};

type Spawned = io::Result<(EngineProcess, ChildStdout, ChildStdin)>;

struct Job {
    command: EngineCommand,
    log_format: String,
    reply: oneshot::Sender<Spawned>,
}

/// Where spawn requests go; cheap to keep in the supervisor.
pub struct Spawner {
    jobs: mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the thread; it uses `runtime`'s process driver to reap what it spawns.
    pub fn start(runtime: tokio::runtime::Handle) -> io::Result<Spawner> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("engine-spawner".into())
            .spawn(move || serve(&runtime, &queue))?;
        Ok(Spawner { jobs })
    }

    /// Starts an engine on the spawner thread; the caller only awaits.
    pub async fn spawn(&self, command: &EngineCommand, log_format: &str) -> Spawned {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            command: command.clone(),
            log_format: log_format.to_string(),
            reply,
        };
        self.jobs.send(job).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn serve(runtime: &tokio::runtime::Handle, queue: &mpsc::Receiver<Job>) {
    let _context = runtime.enter();
    for job in queue {
        let _ = job
            .reply
            .send(EngineProcess::spawn(&job.command, &job.log_format));
    }
    // Every sender is gone, but engines spawned here may still run: this thread must
    // not end before the process does, or their parent-death signal would fire.
    loop {
        std::thread::park();
    }
}

fn gone() -> io::Error {
    io::Error::other("the engine spawner thread is gone")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> EngineCommand {
        EngineCommand {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_engine_is_spawned_off_the_runtime_thread_and_reaped_by_it() {
        let spawner = Spawner::start(tokio::runtime::Handle::current()).unwrap();
        let (mut engine, _out, _in) = spawner.spawn(&sh("exit 3"), "text").await.unwrap();
        let status = engine.exited().await.unwrap();
        assert_eq!(status.code(), Some(3));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_missing_program_is_an_error_not_a_panic() {
        let spawner = Spawner::start(tokio::runtime::Handle::current()).unwrap();
        let missing = EngineCommand {
            program: "/nonexistent/livegate-engine".into(),
            args: Vec::new(),
        };
        assert!(spawner.spawn(&missing, "text").await.is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_engine_outlives_the_spawner_handle() {
        let spawner = Spawner::start(tokio::runtime::Handle::current()).unwrap();
        let (mut engine, _out, _in) = spawner.spawn(&sh("exec sleep 30"), "text").await.unwrap();
        drop(spawner);
        // The spawner thread parks instead of ending, so no parent-death signal fires.
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(300), engine.exited()).await;
        assert!(waited.is_err(), "the engine died with the spawner handle");
    }
}
