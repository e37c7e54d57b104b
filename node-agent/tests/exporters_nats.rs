//! The NATS exporter against a real nats-server (Debian's `nats-server`).

mod exporters_support;

use exporters_support::*;
use futures::StreamExt;
use podtrace_agent::exporters::message::{KernelMessage, PodMessage};
use serde_json::{Value, json};
use std::{
    io::{Read, Write},
    time::{Duration, Instant},
};

/// Under `exporters::` so that `cargo test -p podtrace-agent exporters` selects them.
mod exporters {
    use super::*;

    const POD_SUBJECT: &str = "podtrace.pod.metrics";
    const KERNEL_SUBJECT: &str = "node.kernel.metrics";

    /// Receives `n` messages (JSON) within `timeout`, then checks that nothing more arrives.
    async fn receive(sub: &mut async_nats::Subscriber, n: usize, timeout: Duration) -> Vec<Value> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(m)) => got.push(serde_json::from_slice(&m.payload).unwrap()),
                _ => panic!("received {} of {n} messages: {got:#?}", got.len()),
            }
        }
        if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await
        {
            panic!("unexpected extra message: {}", String::from_utf8_lossy(&extra.payload));
        }
        got
    }

    fn pod_json(t: &podtrace_agent::sample::TargetSample) -> Value {
        serde_json::to_value(PodMessage::new(t, "agent-1")).unwrap()
    }

    fn kernel_json(b: &podtrace_agent::sample::PushBatch) -> Value {
        let kernel = b.kernel.as_ref().expect("the test batches carry kernel counters");
        serde_json::to_value(KernelMessage::new(kernel, "node-1", "agent-1")).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_subscriber_receives_one_message_per_enabled_target_and_the_kernel_message_each_interval()
     {
        let broker = Broker::nats();
        let url = format!("nats://127.0.0.1:{}", broker.port);
        let client = async_nats::connect(&url).await.unwrap();
        let mut pods = client.subscribe(POD_SUBJECT).await.unwrap();
        let mut kernel = client.subscribe(KERNEL_SUBJECT).await.unwrap();
        client.flush().await.unwrap();

        let mut a = args();
        a.nats_url = Some(url);
        let (exporters, registry) = start(&a);
        wait_until("NATS connected", Duration::from_secs(10), || exporters.health().serving())
            .await;
        assert_eq!(export_errors(&registry, "nats"), 0.0, "connecting is not an error");

        let (mut want_pods, mut want_kernel) = (Vec::new(), Vec::new());
        for seq in 0..3 {
            let mut b = batch(seq, 4);
            b.targets[3].export.nats = false; // its profile does not export to NATS
            want_pods.extend(b.targets[..3].iter().map(pod_json));
            want_kernel.push(kernel_json(&b));
            exporters.push(b);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(receive(&mut pods, 9, Duration::from_secs(10)).await, want_pods);
        assert_eq!(receive(&mut kernel, 3, Duration::from_secs(10)).await, want_kernel);
        // The reference's shape, spelled out once.
        let first = &want_pods[0];
        assert_eq!(first["metrics"]["timestamp"], "2025-10-09T08:53:20.000000Z");
        assert_eq!(first["aggregated"]["avg_memory_usage"], json!(900_000));
        assert_eq!(
            (first["pod"].as_str(), first["node"].as_str()),
            (Some("web-0"), Some("node-1"))
        );
        // Besides the reference's objects: resources with their alert levels, and eBPF series.
        let second = &want_pods[1];
        assert_eq!(second["resources"]["memory"]["alert_level"], 1, "{second:#}");
        assert_eq!(second["resources"]["cpu"]["usage"], 1.0);
        assert_eq!(second["ebpf"]["latencies"][0]["type"], "DNS");
        assert_eq!(second["ebpf"]["bytes"][0]["bytes"], 50);

        let h = &exporters.health().exporters[0];
        assert_eq!((h.exporter, h.sent, h.dropped, h.queued), ("nats", 12, 0, 0));
    }

    /// Creates a JetStream stream capturing both subjects: it keeps what the exporter publishes
    /// while no subscriber is connected, so the test can read exactly what reached the server
    /// across a broker restart.
    async fn create_stream(client: &async_nats::Client) {
        let config =
            json!({"name": "EXPORT", "subjects": [POD_SUBJECT, KERNEL_SUBJECT], "storage": "file"});
        let reply = client
            .request("$JS.API.STREAM.CREATE.EXPORT", config.to_string().into())
            .await
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert!(reply.get("error").is_none(), "stream not created: {reply}");
    }

    async fn stream_messages(client: &async_nats::Client) -> Vec<Value> {
        let info = client.request("$JS.API.STREAM.INFO.EXPORT", "".into()).await.unwrap();
        let info: Value = serde_json::from_slice(&info.payload).unwrap();
        let n = info["state"]["messages"].as_u64().unwrap() as usize;
        let inbox = client.new_inbox();
        let mut sub = client.subscribe(inbox.clone()).await.unwrap();
        let consumer = json!({"stream_name": "EXPORT", "config": {
            "deliver_subject": inbox, "deliver_policy": "all", "ack_policy": "none"}});
        let reply = client
            .request("$JS.API.CONSUMER.CREATE.EXPORT", consumer.to_string().into())
            .await
            .unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert!(reply.get("error").is_none(), "consumer not created: {reply}");
        receive(&mut sub, n, Duration::from_secs(10)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_outage_keeps_the_newest_items_counts_the_dropped_ones_and_recovers_by_itself() {
        let mut broker = Broker::nats();
        let url = format!("nats://127.0.0.1:{}", broker.port);
        let client = async_nats::connect(&url).await.unwrap();
        create_stream(&client).await;

        const BOUND: usize = 10;
        let mut a = args();
        a.nats_url = Some(url.clone());
        a.export_queue_size = BOUND;
        let (exporters, _registry) = start(&a);
        let health = || exporters.health().exporters[0].clone();
        wait_until("NATS connected", Duration::from_secs(10), || health().connected).await;

        let b0 = batch(0, 4);
        let mut want: Vec<Value> = b0.targets.iter().map(pod_json).collect();
        want.push(kernel_json(&b0));
        exporters.push(b0);
        wait_until("batch 0 sent", Duration::from_secs(10), || health().sent == 5).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // let JetStream write it out

        broker.kill();
        wait_until("disconnected", Duration::from_secs(10), || !health().connected).await;
        assert!(health().reason.unwrap().contains("disconnected"), "{:?}", health().reason);

        // Five intervals with the broker away: 25 items for a queue of 10.
        let mut slowest = Duration::ZERO;
        for seq in 1..=5 {
            let b = batch(seq, 4);
            if seq >= 4 {
                want.extend(b.targets.iter().map(pod_json));
                want.push(kernel_json(&b));
            }
            let t = Instant::now();
            exporters.push(b);
            slowest = slowest.max(t.elapsed());
            assert!(health().queued <= BOUND, "memory stays bounded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let h = health();
        assert_eq!((h.queued, h.dropped, h.sent), (BOUND, 25 - BOUND as u64, 5));
        assert!(!h.connected);
        // Waiting for the broker would take the 5 s connection timeout, every time: half of it
        // leaves room for a debug build preempted on a busy machine.
        assert!(
            slowest < Duration::from_millis(2500),
            "push waited {slowest:?} for an absent broker"
        );

        broker.start();
        wait_until("reconnected", Duration::from_secs(10), || health().connected).await;
        wait_until("backlog sent", Duration::from_secs(10), || health().sent == 5 + BOUND as u64)
            .await;
        let h = health();
        assert_eq!((h.queued, h.dropped), (0, 15));

        let client = async_nats::connect(&url).await.unwrap();
        assert_eq!(
            stream_messages(&client).await,
            want,
            "the server has batch 0 and the newest 10"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_subscriber_does_not_slow_push_or_other_subscribers() {
        let broker = Broker::nats();
        let url = format!("nats://127.0.0.1:{}", broker.port);

        // A subscriber that never reads, with a tiny receive buffer: the server's writes to it
        // stall until its write deadline cuts it off as a slow consumer.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let slow = socket.connect(([127, 0, 0, 1], broker.port).into()).await.unwrap();
        let mut slow = slow.into_std().unwrap();
        slow.set_nonblocking(false).unwrap();
        let mut info = [0u8; 4096];
        let _ = slow.read(&mut info).unwrap();
        let subscribe = format!("CONNECT {{\"verbose\":false}}\r\nSUB {POD_SUBJECT} 1\r\nPING\r\n");
        slow.write_all(subscribe.as_bytes()).unwrap();

        let client = async_nats::connect(&url).await.unwrap();
        let mut pods = client.subscribe(POD_SUBJECT).await.unwrap();
        client.flush().await.unwrap();

        let mut a = args();
        a.nats_url = Some(url);
        a.export_queue_size = 100_000;
        let (exporters, _registry) = start(&a);
        wait_until("NATS connected", Duration::from_secs(10), || exporters.health().serving())
            .await;

        const BATCHES: u64 = 200;
        const TARGETS: usize = 100;
        push_without_waiting(&exporters, BATCHES, TARGETS).await;

        let total = BATCHES as usize * TARGETS;
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got < total {
            match tokio::time::timeout_at(deadline, pods.next()).await {
                Ok(Some(_)) => got += 1,
                _ => panic!("the healthy subscriber got {got} of {total}"),
            }
        }
        assert!(
            broker.log().contains("Slow Consumer"),
            "the slow subscriber was slow: {}",
            broker.log()
        );
        assert_eq!(exporters.health().exporters[0].dropped, 0);
        drop(slow);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_bad_url_fails_at_start_and_wrong_credentials_show_in_health() {
        let broker = Broker::nats_with_user("agent", "s3cret");
        let mut a = args();
        a.nats_url = Some("nats://127.0.0.1:42x2".into());
        let err = podtrace_agent::exporters::Exporters::start(&a, &mut Default::default())
            .err()
            .expect("a malformed URL fails at start");
        assert!(err.to_string().contains("--nats-url (NATS_URL)"), "{err}");

        a.nats_url = Some(format!("nats://agent:wrong@127.0.0.1:{}", broker.port));
        let (exporters, _registry) = start(&a);
        wait_until("the refusal in health", Duration::from_secs(10), || {
            let reason = exporters.health().exporters[0].reason.clone().unwrap_or_default();
            reason.contains("check the user and password")
        })
        .await;
        let reason = exporters.health().exporters[0].reason.clone().unwrap();
        assert!(!reason.contains("wrong"), "the password is not shown: {reason}");
        drop(exporters);

        a.nats_url = Some(format!("nats://agent:s3cret@127.0.0.1:{}", broker.port));
        let (exporters, _registry) = start(&a);
        wait_until("connected", Duration::from_secs(10), || exporters.health().serving()).await;
    }
}
