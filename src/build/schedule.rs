//! Runs a plan's stages, each as soon as the stages it needs are finished, at most `jobs`
//! at once (`kiln build --jobs`, buildah's meaning).
//!
//! Workers are scoped threads that take the next ready stage under one mutex; a stage's own
//! work runs outside it. The first failure sets [`BuildEnv::cancelled`], so running stages
//! stop before their next step (a RUN in progress is left to finish), and is the error the
//! build reports.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::BuildError;
use super::stage::{BuildEnv, Finished, Runner};
use crate::plan::Plan;

/// What the workers coordinate through.
#[derive(Default)]
struct Board {
    finished: HashMap<usize, Finished>,
    started: HashSet<usize>,
    running: usize,
    error: Option<BuildError>,
}

/// What a worker does next.
enum Next {
    Run(usize, HashMap<usize, Finished>),
    Wait,
    Stop,
}

/// Builds every stage of `plan.order` and returns them all, or the first error.
pub(crate) fn run_stages(
    env: &BuildEnv,
    plan: &Plan,
    jobs: usize,
) -> Result<HashMap<usize, Finished>, BuildError> {
    let board = Mutex::new(Board::default());
    let wake = Condvar::new();
    let workers = jobs.clamp(1, plan.order.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| worker(env, plan, &board, &wake));
        }
    });
    let board = board.into_inner().unwrap_or_else(|e| e.into_inner());
    match board.error {
        Some(e) => Err(e),
        None => Ok(board.finished),
    }
}

fn worker(env: &BuildEnv, plan: &Plan, board: &Mutex<Board>, wake: &Condvar) {
    let mut b = lock(board);
    loop {
        match next(plan, &mut b) {
            Next::Stop => {
                wake.notify_all();
                return;
            }
            Next::Wait => b = wake.wait(b).unwrap_or_else(|e| e.into_inner()),
            Next::Run(index, deps) => {
                drop(b);
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Runner::new(env, &deps).run(&plan.stages[index])
                }));
                b = lock(board);
                let result = match result {
                    Ok(r) => r,
                    Err(panic) => {
                        // Let the other workers stop instead of waiting for this stage forever.
                        b.running -= 1;
                        fail(env, &mut b, BuildError::Cancelled);
                        drop(b);
                        wake.notify_all();
                        std::panic::resume_unwind(panic);
                    }
                };
                b.running -= 1;
                match result {
                    Ok(done) => {
                        b.finished.insert(index, done);
                    }
                    Err(e) => fail(env, &mut b, e),
                }
                wake.notify_all();
            }
        }
    }
}

/// The first real error wins; `Cancelled` from stages stopped because of it is dropped.
fn fail(env: &BuildEnv, b: &mut Board, e: BuildError) {
    env.cancelled.store(true, Ordering::SeqCst);
    let replace = match &b.error {
        None => true,
        Some(BuildError::Cancelled) => !matches!(e, BuildError::Cancelled),
        Some(_) => false,
    };
    if replace {
        b.error = Some(e);
    }
}

/// The next stage whose dependencies are all finished, with copies of the finished stages
/// it may read; `Wait` while running stages may make one ready.
fn next(plan: &Plan, b: &mut Board) -> Next {
    if b.error.is_some() {
        return Next::Stop;
    }
    let ready = plan.order.iter().copied().find(|i| {
        !b.started.contains(i)
            && plan.stages[*i]
                .depends_on
                .iter()
                .all(|d| b.finished.contains_key(d))
    });
    match ready {
        Some(index) => {
            b.started.insert(index);
            b.running += 1;
            let deps = plan.stages[index]
                .depends_on
                .iter()
                .map(|d| (*d, b.finished[d].clone()))
                .collect();
            Next::Run(index, deps)
        }
        None if b.running > 0 => Next::Wait,
        None if b.started.len() < plan.order.len() => {
            // Nothing runs and nothing is ready: a dependency is missing from the order.
            // The planner never does this; fail rather than hang if it ever did.
            b.error = Some(BuildError::Plan(
                "internal error: a stage depends on a stage the plan does not build".into(),
            ));
            Next::Stop
        }
        None => Next::Stop,
    }
}

fn lock(board: &Mutex<Board>) -> MutexGuard<'_, Board> {
    board.lock().unwrap_or_else(|e| e.into_inner())
}
