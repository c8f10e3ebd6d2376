//! Prometheus metrics (`GET /metrics`): the `metrics` facade with the Prometheus exporter's
//! recorder, rendered by our own HTTP route. Every family is described at start (so `# HELP` and
//! `# TYPE` are always present) and prefixed `raftlite_`. Counters are incremented where things
//! happen; gauges that mirror state (Raft indexes, file sizes, snapshot counters) are set when
//! `/metrics` is scraped. With `-metrics=false` no recorder is installed and every macro is a no-op.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the recorder (once per process) and describe every family.
pub fn install() -> Result<(), String> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let latency = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
    let byte_sizes = [1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_entries".into()), &sizes))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &byte_sizes))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    let _ = HANDLE.set(handle);
    describe();
    Ok(())
}

/// Render the exposition text, if metrics are on.
pub fn render() -> Option<String> {
    HANDLE.get().map(|h| h.render())
}

fn describe() {
    describe_counter!("raftlite_http_requests_total", "HTTP API requests by endpoint, method and status");
    describe_histogram!("raftlite_http_request_duration_seconds", Unit::Seconds, "HTTP API request latency");
    describe_counter!("raftlite_http_forwarded_total", "Requests a follower forwarded to the leader");
    describe_counter!(
        "raftlite_http_auth_failures_total",
        "Requests refused for want of credentials or permission, by reason"
    );
    describe_counter!(
        "raftlite_tls_handshake_failures_total",
        "TLS connections refused, by port (api, raft) and reason (plain_http, handshake, timeout, common_name)"
    );
    describe_counter!("raftlite_auto_backup_uploads_total", "Automatic backup uploads, by result (ok, failed)");
    describe_counter!(
        "raftlite_auto_backup_skipped_total",
        "Automatic backup ticks that uploaded nothing: unchanged since the last upload, or the store already current"
    );
    describe_gauge!(
        "raftlite_auto_backup_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the last successful automatic backup (alert when it stops moving)"
    );
    describe_gauge!("raftlite_auto_backup_last_bytes", Unit::Bytes, "Size of the last automatic backup uploaded");
    describe_gauge!("raftlite_cdc_queue_depth", "CDC: log indexes with events waiting in this node's queue");
    describe_gauge!(
        "raftlite_cdc_queue_bytes",
        "CDC: bytes of event JSON in this node's queue (bounded by max_queue_bytes)"
    );
    describe_gauge!("raftlite_cdc_captured_index", "CDC: highest log index whose events this node queued");
    describe_gauge!("raftlite_cdc_high_water_mark", "CDC: delivered position shared by the leader through the log");
    describe_gauge!("raftlite_cdc_delivered_index", "CDC: highest log index this node delivered as leader");
    describe_counter!("raftlite_cdc_events_captured_total", "CDC: row events queued on this node");
    describe_counter!(
        "raftlite_cdc_events_dropped_total",
        "CDC: events dropped because the queue reached max_queue_bytes (the oldest go first)"
    );
    describe_counter!(
        "raftlite_cdc_groups_from_snapshots_total",
        "CDC: undelivered groups this node queued from the snapshots it installed"
    );
    describe_counter!("raftlite_cdc_batches_total", "CDC: batches POSTed by this node, by result (ok, failed)");
    describe_counter!("raftlite_cdc_events_sent_total", "CDC: events delivered by this node");
    describe_counter!(
        "raftlite_cdc_batches_given_up_total",
        "CDC: batches abandoned after transmit_max_retries (their events were not delivered)"
    );
    describe_histogram!(
        "raftlite_cdc_delivery_lag_seconds",
        Unit::Seconds,
        "CDC: time from an entry's proposal to the endpoint's acknowledgement"
    );
    describe_histogram!("raftlite_cdc_post_seconds", Unit::Seconds, "CDC: time of one POST to the endpoint");
    describe_counter!("raftlite_tls_reloads_total", "Certificate reloads after the files changed, by result");
    describe_counter!(
        "raftlite_http_connections_refused_total",
        "Connections closed at once because the port had -http-max-conns open"
    );
    describe_histogram!(
        "raftlite_group_commit_requests",
        "Write requests carried by one proposal (group commit: one log entry, one fsync)"
    );
    describe_counter!(
        "raftlite_raft_rebuilds_total",
        "Times Raft was rebuilt over the same stores after a fatal error"
    );
    describe_gauge!("raftlite_write_queue_depth", "Queued write requests not yet written");
    describe_counter!("raftlite_snapshot_sent_bytes_total", Unit::Bytes, "Snapshot bytes sent to other nodes");
    describe_counter!(
        "raftlite_snapshot_sent_wire_bytes_total",
        Unit::Bytes,
        "Snapshot bytes put on the wire (smaller with -compress-snap-transport)"
    );
    describe_counter!("raftlite_write_queue_batches_total", "Batches of queued writes written");
    describe_counter!("raftlite_write_queue_requests_total", "Queued write requests written");
    describe_counter!(
        "raftlite_write_queue_statement_errors_total",
        "Queued statements that failed (nobody waits for them)"
    );
    describe_counter!("raftlite_write_queue_retries_total", "Queued-write batches retried after a failure");
    describe_gauge!("raftlite_raft_term", "Current Raft term");
    describe_gauge!("raftlite_raft_state", "1 for the Raft role this node has now (label state)");
    describe_gauge!("raftlite_raft_is_leader", "1 if this node is the leader");
    describe_counter!("raftlite_raft_leader_changes_total", "Times this node saw the leader change");
    describe_counter!("raftlite_raft_elections_started_total", "Elections this node started (became candidate)");
    describe_counter!(
        "raftlite_raft_prevotes_total",
        "Pre-votes this node asked for before standing for election, by result (won: it stood; lost: it did not)"
    );
    describe_counter!(
        "raftlite_disco_lookups_total",
        "DNS discovery lookups (-disco-mode dns|dns-srv), by result (ok, error)"
    );
    describe_gauge!("raftlite_raft_commit_index", "Highest log index known committed (applied on this node)");
    describe_gauge!("raftlite_raft_applied_index", "Last log index applied to the database");
    describe_gauge!("raftlite_raft_last_log_index", "Last log index in this node's log");
    describe_gauge!("raftlite_raft_snapshot_index", "Log index of the last snapshot");
    describe_gauge!("raftlite_raft_replication_lag_entries", "On the leader: entries each follower is behind");
    describe_counter!("raftlite_log_appends_total", "Log appends (each one fsync)");
    describe_histogram!("raftlite_log_append_entries", "Entries written per log append (per fsync)");
    describe_histogram!("raftlite_log_fsync_seconds", Unit::Seconds, "Time to write and fsync one log append");
    describe_gauge!("raftlite_log_size_bytes", Unit::Bytes, "Size of the Raft log file and its WAL");
    describe_histogram!("raftlite_apply_batch_entries", "Log entries applied per SQLite transaction");
    describe_histogram!("raftlite_apply_seconds", Unit::Seconds, "Time to apply one batch of entries");
    describe_histogram!(
        "raftlite_replication_rpc_seconds",
        Unit::Seconds,
        "Leader: round trip of an AppendEntries call that carries entries, as the leader sees it"
    );
    describe_histogram!(
        "raftlite_follower_append_seconds",
        Unit::Seconds,
        "Follower: an AppendEntries call that carries entries, from its decoded body to the encoded answer (the log fsync included)"
    );
    describe_counter!(
        "raftlite_replication_presend_total",
        "Leader: new entries sent to a follower while the leader's own fsync ran, by the follower's answer (accepted, refused, failed)"
    );
    describe_counter!(
        "raftlite_replication_presend_answers_total",
        "Leader: openraft's requests to a follower not sent, because the follower had accepted the same entries from an early send, whose answer stood for it"
    );
    describe_counter!(
        "raftlite_replication_commit_carried_total",
        "Leader: replication requests with no entries (the commit index) not sent, because the next early send to the follower carried the commit index and its answer stood for them"
    );
    describe_counter!("raftlite_applied_entries_total", "Log entries applied since start");
    describe_counter!("raftlite_snapshots_total", "Snapshots (compactions) recorded");
    describe_counter!(
        "raftlite_checkpoint_retries_total",
        "Compaction checkpoints that readers of older pages kept from finishing, tried again"
    );
    describe_counter!(
        "raftlite_snapshot_copies_total",
        "Snapshot streams opened for followers (the database is read in place, not copied)"
    );
    describe_counter!("raftlite_restores_total", "Snapshots installed from a leader");
    describe_counter!("raftlite_restores_failed_total", "Snapshots rejected on install");
    describe_histogram!("raftlite_snapshot_seconds", Unit::Seconds, "Time to record a snapshot (compaction)");
    describe_histogram!("raftlite_restore_bytes", Unit::Bytes, "Size of snapshots installed from a leader");
    describe_histogram!("raftlite_restore_seconds", Unit::Seconds, "Time to verify and install a snapshot");
    describe_counter!("raftlite_actor_restarts_total", "Actor restarts by actor");
    describe_gauge!("raftlite_sqlite_db_size_bytes", Unit::Bytes, "Size of the SQLite database file");
    describe_gauge!("raftlite_sqlite_wal_size_bytes", Unit::Bytes, "Size of the SQLite WAL file");
    describe_counter!("raftlite_internode_bytes_in_total", Unit::Bytes, "Bytes received on the inter-node port");
    describe_counter!("raftlite_internode_bytes_out_total", Unit::Bytes, "Bytes sent to other nodes");
    // Make the counters appear at once, with zero values.
    counter!("raftlite_http_forwarded_total").increment(0);
    counter!("raftlite_raft_leader_changes_total").increment(0);
    counter!("raftlite_raft_elections_started_total").increment(0);
    for result in ["won", "lost"] {
        counter!("raftlite_raft_prevotes_total", "result" => result).increment(0);
    }
    counter!("raftlite_log_appends_total").increment(0);
    counter!("raftlite_applied_entries_total").increment(0);
    counter!("raftlite_internode_bytes_in_total").increment(0);
    counter!("raftlite_internode_bytes_out_total").increment(0);
    gauge!("raftlite_log_size_bytes").set(0.0);
    // Counters a dashboard or an alert watches for failures must read 0 on a healthy node, not
    // "no data": every one with a fixed label set is exported from the start.
    for reason in ["no_credentials", "malformed", "unknown_user", "wrong_password", "not_permitted"] {
        counter!("raftlite_http_auth_failures_total", "reason" => reason).increment(0);
    }
    for port in ["api", "raft"] {
        for reason in ["plain_http", "handshake", "timeout", "common_name"] {
            counter!("raftlite_tls_handshake_failures_total", "port" => port, "reason" => reason).increment(0);
        }
        counter!("raftlite_http_connections_refused_total", "port" => port).increment(0);
    }
    for actor in crate::actors::supervise::ACTORS {
        counter!("raftlite_actor_restarts_total", "actor" => *actor).increment(0);
    }
    for name in [
        "raftlite_raft_rebuilds_total",
        "raftlite_restores_total",
        "raftlite_restores_failed_total",
        "raftlite_snapshots_total",
        "raftlite_checkpoint_retries_total",
        "raftlite_snapshot_copies_total",
        "raftlite_snapshot_sent_bytes_total",
        "raftlite_snapshot_sent_wire_bytes_total",
        "raftlite_write_queue_batches_total",
        "raftlite_write_queue_requests_total",
        "raftlite_write_queue_retries_total",
        "raftlite_write_queue_statement_errors_total",
    ] {
        counter!(name).increment(0);
    }
}

#[cfg(test)]
mod tests {
    /// Every metric the shipped Grafana dashboard queries is one this module describes.
    #[test]
    fn dashboard_uses_only_known_metrics() {
        let dash = include_str!("../config/grafana-dashboard.json");
        let me = include_str!("metrics.rs");
        let mut rest = dash;
        let mut checked = 0;
        while let Some(i) = rest.find("raftlite_") {
            let name: String =
                rest[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect::<String>();
            let base =
                ["_bucket", "_sum", "_count"].iter().fold(name.clone(), |n, s| n.trim_end_matches(s).to_string());
            assert!(me.contains(&format!("\"{base}\"")), "dashboard uses unknown metric {name}");
            checked += 1;
            rest = &rest[i + name.len()..];
        }
        assert!(checked > 20);
    }
}
