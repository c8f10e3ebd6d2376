//! A DNS server for the discovery tests: authoritative for whatever names the test gives it, on a
//! UDP port of loopback, with records the test changes while nodes run. It answers A queries
//! from its address table, SRV queries from its service table (with the targets' A records as
//! additionals), and NXDOMAIN for anything else, with a TTL of 0 so that nothing caches an
//! answer. Messages are parsed and written by hickory-proto (the resolver's own crate).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

#[derive(Default)]
struct Zone {
    /// name (lower case, no trailing dot) → addresses.
    a: BTreeMap<String, Vec<Ipv4Addr>>,
    /// SRV name → (target host, port).
    srv: BTreeMap<String, Vec<(String, u16)>>,
}

pub struct DnsServer {
    addr: String,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Start on a free UDP port of `ip` (127.0.0.x).
    pub fn start(ip: &str) -> std::io::Result<DnsServer> {
        let socket = UdpSocket::bind((ip, 0))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = socket.local_addr()?.to_string();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let (z, stop, queries) = (zone.clone(), Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, q) = (stop.clone(), queries.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                q.fetch_add(1, Ordering::Relaxed);
                if let Some(reply) = answer(&z, &buf[..n]) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Ok(DnsServer { addr, zone, queries, stop, thread: Some(thread) })
    }

    /// `ip:port` to give as `-disco-config`'s `resolver`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Queries received so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Make `name` resolve to `ips` (none: NXDOMAIN).
    pub fn set_a(&self, name: &str, ips: &[Ipv4Addr]) {
        if let Ok(mut z) = self.zone.lock() {
            if ips.is_empty() {
                z.a.remove(&key(name));
            } else {
                z.a.insert(key(name), ips.to_vec());
            }
        }
    }

    /// Make SRV name `name` (e.g. `_raft._tcp.svc`) list `targets` (none: NXDOMAIN).
    pub fn set_srv(&self, name: &str, targets: &[(&str, u16)]) {
        if let Ok(mut z) = self.zone.lock() {
            if targets.is_empty() {
                z.srv.remove(&key(name));
            } else {
                z.srv.insert(key(name), targets.iter().map(|(h, p)| (key(h), *p)).collect());
            }
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one query, or None for something that is not a query we can parse.
fn answer(zone: &Mutex<Zone>, packet: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(packet).ok()?;
    let q = req.queries.first()?.clone();
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.add_query(q.clone());
    let name = key(&q.name().to_utf8());
    let z = zone.lock().ok()?;
    let a_records = |host: &str| -> Vec<Record> {
        let owner = Name::from_utf8(format!("{host}.")).unwrap_or_default();
        z.a.get(host).into_iter().flatten().map(|ip| Record::from_rdata(owner.clone(), 0, RData::A(A(*ip)))).collect()
    };
    let known = z.a.contains_key(&name) || z.srv.contains_key(&name);
    match q.query_type() {
        RecordType::A => resp.add_answers(a_records(&name)),
        RecordType::SRV => {
            for (host, port) in z.srv.get(&name).into_iter().flatten() {
                let target = Name::from_utf8(format!("{host}.")).unwrap_or_default();
                resp.add_answer(Record::from_rdata(q.name().clone(), 0, RData::SRV(SRV::new(0, 0, *port, target))));
                resp.add_additionals(a_records(host));
            }
            &mut resp
        }
        // AAAA and the rest: the name exists (or not) but has no such records.
        _ => &mut resp,
    };
    if !known {
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    resp.to_vec().ok()
}
