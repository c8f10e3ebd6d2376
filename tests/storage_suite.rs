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
        let (p, snaps) = (db_path.clone(), dir.path().join("snapshots"));
        let applier = Supervisor::start_in_arbiter(&arb, move |_| {
            Applier::new(p, snaps, Default::default(), Arc::new(ApplierStats::default()), None, None)
        });
        let sm = SmAdapter::new(applier, None, db_path, dir.path().join("snapshots"), Default::default(), None)
            .expect("snapshot dir");
        Ok((dir, LogAdapter::new(log), sm))
    }
}

#[test]
fn openraft_storage_conformance() {
    Suite::test_all(Builder).expect("storage suite");
}

/// A snapshot stream damaged in transit is rejected, and the follower's database is untouched and
/// keeps working.
#[test]
fn corrupted_snapshot_stream_is_rejected() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use raftlite::store::command::{Command, ExecOptions, Statement};
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (_d1, _l1, mut leader) = Builder.build().await.expect("leader");
        let (_d2, _l2, mut follower) = Builder.build().await.expect("follower");
        let entry = |index: u64, sql: &str| raftlite::raft::Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::Execute {
                stmts: vec![Statement::new(sql)],
                opts: ExecOptions::default(),
                seed: 0,
            }),
        };
        leader.apply(vec![entry(1, "CREATE TABLE t (x)"), entry(2, "INSERT INTO t VALUES(1)")]).await.expect("apply");
        follower.apply(vec![entry(1, "CREATE TABLE t (x)")]).await.expect("apply");
        let snap = leader.get_snapshot_builder().await.build_snapshot().await.expect("build");
        let mut data = snap.snapshot;
        data.seek(std::io::SeekFrom::Start(0)).await.expect("seek");
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).await.expect("read");
        bytes[200] ^= 0x5a;
        let mut rx = follower.begin_receiving_snapshot().await.expect("receive");
        rx.write_all(&bytes).await.expect("write");
        let err = follower.install_snapshot(&snap.meta, rx).await.expect_err("must be rejected");
        assert!(err.to_string().contains("checksum"), "{err}");
        // Untouched: still at index 1, and it applies on.
        let (applied, _) = follower.applied_state().await.expect("state");
        assert_eq!(applied.map(|l| l.index), Some(1));
        follower.apply(vec![entry(2, "INSERT INTO t VALUES(1)")]).await.expect("apply after rejection");
        // The undamaged stream installs.
        let mut data = leader.get_current_snapshot().await.expect("current").expect("some").snapshot;
        let mut good = Vec::new();
        data.read_to_end(&mut good).await.expect("read");
        let mut rx = follower.begin_receiving_snapshot().await.expect("receive");
        rx.write_all(&good).await.expect("write");
        follower.install_snapshot(&snap.meta, rx).await.expect("install");
    });
}
