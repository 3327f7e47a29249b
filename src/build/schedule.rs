//! Runs a plan's stages, each as soon as the stages it needs are finished, at most `jobs`
//! at once (`kiln build --jobs`, buildah's meaning).
//!
//! Workers are scoped threads that take the next ready stage under one mutex; a stage's own
//! work runs outside it. The first failure sets [`BuildEnv::cancelled`], so running stages
//! stop before their next step (a RUN in progress is left to finish), and is the error the
//! build reports.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::BuildError;
use super::runner::{BuildEnv, Finished, Runner};
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
                        fail(&env.cancelled, &mut b, BuildError::Cancelled);
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
                    Err(e) => fail(&env.cancelled, &mut b, e),
                }
                wake.notify_all();
            }
        }
    }
}

/// The first real error wins; `Cancelled` from stages stopped because of it is dropped.
fn fail(cancelled: &AtomicBool, b: &mut Board, e: BuildError) {
    cancelled.store(true, Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageBuilder, Platform};
    use crate::plan::{PlanOptions, plan};

    /// Stages a and b are independent; the last needs both.
    fn diamond() -> Plan {
        plan(
            "FROM scratch AS a\nFROM scratch AS b\nFROM a\nCOPY --from=b / /\n",
            &PlanOptions::default(),
        )
        .unwrap()
    }

    fn finished() -> Finished {
        Finished {
            image: ImageBuilder::new(Platform::host(), chrono::Utc::now()),
            key: crate::Digest::of(b"k"),
            layers_built: 0,
            layers_reused: 0,
            newest_hit: None,
        }
    }

    fn started(n: &Next) -> Option<usize> {
        match n {
            Next::Run(i, _) => Some(*i),
            _ => None,
        }
    }

    #[test]
    fn independent_stages_start_together_and_the_join_waits_for_both() {
        let p = diamond();
        let mut b = Board::default();
        let first = started(&next(&p, &mut b)).unwrap();
        let second = started(&next(&p, &mut b)).unwrap();
        assert_eq!(
            [first, second].iter().copied().collect::<HashSet<_>>(),
            HashSet::from([0, 1])
        );
        assert!(matches!(next(&p, &mut b), Next::Wait), "stage 2 needs both");
        b.running -= 1;
        b.finished.insert(0, finished());
        assert!(
            matches!(next(&p, &mut b), Next::Wait),
            "stage 2 still needs b"
        );
        b.running -= 1;
        b.finished.insert(1, finished());
        match next(&p, &mut b) {
            Next::Run(2, deps) => {
                assert_eq!(
                    deps.keys().copied().collect::<HashSet<_>>(),
                    HashSet::from([0, 1])
                )
            }
            _ => panic!("stage 2 should be ready"),
        }
        b.running -= 1;
        b.finished.insert(2, finished());
        assert!(matches!(next(&p, &mut b), Next::Stop));
    }

    #[test]
    fn the_first_real_error_is_the_one_reported() {
        let cancelled = AtomicBool::new(false);
        let mut b = Board::default();
        fail(&cancelled, &mut b, BuildError::Cancelled);
        assert!(cancelled.load(Ordering::SeqCst));
        fail(&cancelled, &mut b, BuildError::Plan("first".into()));
        fail(&cancelled, &mut b, BuildError::Plan("second".into()));
        fail(&cancelled, &mut b, BuildError::Cancelled);
        assert!(matches!(&b.error, Some(BuildError::Plan(m)) if m == "first"));
    }

    #[test]
    fn an_error_stops_every_worker() {
        let p = diamond();
        let mut b = Board::default();
        next(&p, &mut b);
        b.error = Some(BuildError::Cancelled);
        assert!(matches!(next(&p, &mut b), Next::Stop));
    }

    #[test]
    fn a_dependency_outside_the_order_fails_instead_of_hanging() {
        let mut p = diamond();
        p.order.retain(|&i| i != 1);
        let mut b = Board::default();
        assert_eq!(started(&next(&p, &mut b)), Some(0));
        b.running -= 1;
        b.finished.insert(0, finished());
        assert!(matches!(next(&p, &mut b), Next::Stop));
        assert!(matches!(b.error, Some(BuildError::Plan(_))));
    }
}
