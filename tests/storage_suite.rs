//! openraft's storage conformance suite (`openraft::testing::Suite`) run against raftlite's log
//! store and state machine: the real actors, on a real actix System, over real files.

use std::sync::{Arc, OnceLock};

use actix::{ArbiterHandle, Supervisor};
use openraft::testing::{StoreBuilder, Suite};
use raftlite::actors::applier::{Applier, ApplierStats};
use raftlite::actors::log_store::LogStore;
use raftlite::raft::log_adapter::LogAdapter;
use raftlite::raft::sm_adapter::SmAdapter;
use raftlite::raft::{StorageError, TypeConfig};
use tempfile::TempDir;

fn arbiter() -> ArbiterHandle {
    static H: OnceLock<ArbiterHandle> = OnceLock::new();
    H.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let sys = actix::System::new();
            tx.send(actix::System::current().arbiter().clone()).expect("send arbiter");
            sys.run().expect("actix system");
        });
        rx.recv().expect("arbiter handle")
    })
    .clone()
}

struct Builder;

impl StoreBuilder<TypeConfig, LogAdapter, SmAdapter, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogAdapter, SmAdapter), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let arb = arbiter();
        let log_path = dir.path().join("log.sqlite");
        let db_path = dir.path().join("db.sqlite");
        let log = Supervisor::start_in_arbiter(&arb, move |_| LogStore::new(log_path));
        let p = db_path.clone();
        let applier =
            Supervisor::start_in_arbiter(&arb, move |_| Applier::new(p, false, Arc::new(ApplierStats::default())));
        let sm = SmAdapter::new(applier, None, db_path, dir.path().join("snapshots"), Default::default())
            .expect("snapshot dir");
        Ok((dir, LogAdapter::new(log), sm))
    }
}

#[test]
fn openraft_storage_conformance() {
    Suite::test_all(Builder).expect("storage suite");
}
