//! The MQTT exporter against a real broker (Debian's `mosquitto`).

mod exporters_support;

use exporters_support::*;
use podtrace_agent::exporters::{ExportError, Exporters, message::MqttMessage};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;

/// Under `exporters::` so that `cargo test -p podtrace-agent exporters` selects them.
mod exporters {
    use super::*;

    const TEMPLATE: &str = "m/{domain}/c/{channel}/metrics/{namespace}/{pod}";

    /// A test subscriber on `m/#` (QoS 1); returns once the broker acknowledged the subscription.
    /// With `persistent`, its session (subscription and queued messages) outlives disconnections.
    async fn subscriber(
        port: u16,
        persistent: bool,
        credentials: Option<(&str, &str)>,
    ) -> mpsc::UnboundedReceiver<Publish> {
        let mut options = MqttOptions::new("checker", "127.0.0.1", port);
        options.set_clean_session(!persistent).set_keep_alive(Duration::from_secs(5));
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client.subscribe("m/#", QoS::AtLeastOnce).await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (subscribed_tx, mut subscribed) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed.recv()).await.unwrap().unwrap();
        rx
    }

    /// Receives exactly `n` messages, then checks that nothing more arrives.
    async fn receive(rx: &mut mpsc::UnboundedReceiver<Publish>, n: usize) -> Vec<Publish> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while got.len() < n {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => got.push(p),
                _ => panic!("received {} of {n}: {got:#?}", got.len()),
            }
        }
        if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            panic!("unexpected extra message on {}", extra.topic);
        }
        got
    }

    fn expected(t: &podtrace_agent::sample::TargetSample) -> (String, Value) {
        let topic = format!("m/d1/c/c1/metrics/{}/{}", t.namespace, t.pod);
        (topic, serde_json::to_value(MqttMessage::from(t)).unwrap())
    }

    fn decoded(got: &[Publish]) -> Vec<(String, Value)> {
        got.iter().map(|p| (p.topic.clone(), serde_json::from_slice(&p.payload).unwrap())).collect()
    }

    fn mqtt_args(port: u16) -> podtrace_agent::exporters::ExporterArgs {
        let mut a = args();
        a.mqtt_url = Some(format!("mqtt://127.0.0.1:{port}"));
        a.mqtt_topic = TEMPLATE.into();
        a.mqtt_domain = "d1".into();
        a.mqtt_channel = "c1".into();
        a
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt_subscriber_receives_the_reference_json_on_the_templated_topic_at_qos1_not_retained()
     {
        let broker = Broker::mosquitto(None);
        let mut rx = subscriber(broker.port, false, None).await;
        let (exporters, registry) = start(&mqtt_args(broker.port));
        wait_until("MQTT connected", Duration::from_secs(10), || exporters.health().serving())
            .await;
        assert_eq!(export_errors(&registry, "mqtt"), 0.0, "connecting is not an error");

        let mut want = Vec::new();
        for seq in 0..3 {
            let mut b = batch(seq, 4);
            b.targets[3].export.mqtt = false; // its profile does not export to MQTT
            want.extend(b.targets[..3].iter().map(expected));
            exporters.push(b);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got = receive(&mut rx, 9).await;
        for p in &got {
            assert_eq!((p.qos, p.retain), (QoS::AtLeastOnce, false), "{}", p.topic);
        }
        assert_eq!(decoded(&got), want);
        let (_, first) = &want[0];
        assert_eq!(first["task_id"], "uid-0");
        assert_eq!(first["proplet_id"], "node-1");
        // Besides the reference's objects: resources with their alert levels, and eBPF series.
        let (_, second) = &want[1];
        assert_eq!(second["resources"]["memory"]["alert_level"], 1, "{second:#}");
        assert_eq!(second["resources"]["memory"]["limit"], 2_000_000.0);
        assert_eq!(second["ebpf"]["latencies"][0]["probe"], "dns");
        assert_eq!(second["ebpf"]["bytes"][0]["direction"], "send");
        wait_until("acks counted", Duration::from_secs(5), || {
            exporters.health().exporters[0].sent == 9
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt_outage_keeps_the_newest_items_counts_the_dropped_ones_and_recovers_by_itself() {
        let mut broker = Broker::mosquitto_persistent();
        let mut rx = subscriber(broker.port, true, None).await;
        const BOUND: usize = 8;
        let mut a = mqtt_args(broker.port);
        a.export_queue_size = BOUND;
        let (exporters, _registry) = start(&a);
        let health = || exporters.health().exporters[0].clone();
        wait_until("MQTT connected", Duration::from_secs(10), || health().connected).await;

        let b0 = batch(0, 4);
        let want0: Vec<_> = b0.targets.iter().map(expected).collect();
        exporters.push(b0);
        assert_eq!(decoded(&receive(&mut rx, 4).await), want0);
        wait_until("batch 0 acknowledged", Duration::from_secs(5), || health().sent == 4).await;

        broker.kill();
        wait_until("disconnected", Duration::from_secs(10), || !health().connected).await;
        let mut want = Vec::new();
        for seq in 1..=5 {
            let b = batch(seq, 4);
            if seq >= 4 {
                want.extend(b.targets.iter().map(expected));
            }
            exporters.push(b);
            assert!(health().queued <= BOUND, "memory stays bounded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let h = health();
        assert_eq!((h.queued, h.dropped, h.sent), (BOUND, 20 - BOUND as u64, 4));

        broker.start();
        wait_until("reconnected", Duration::from_secs(10), || health().connected).await;
        wait_until("backlog acknowledged", Duration::from_secs(10), || health().sent == 4 + 8)
            .await;
        // The persistent session of the checker got the newest 8, whenever it reconnected.
        assert_eq!(decoded(&receive(&mut rx, BOUND).await), want);
        assert_eq!((health().queued, health().dropped), (0, 12));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt_credentials_missing_fail_at_start_and_wrong_ones_show_in_health() {
        let broker = Broker::mosquitto(Some(&[("agent", "s3cret")]));
        let dir = TempDir::new("mqtt-creds");
        let mut a = mqtt_args(broker.port);

        a.mqtt_credentials_file = Some(dir.0.join("missing"));
        let err =
            Exporters::start(&a, &mut Default::default()).err().expect("a missing file fails");
        assert!(matches!(err, ExportError::Credentials { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");

        let wrong = dir.0.join("wrong");
        std::fs::write(&wrong, "agent:nope\n").unwrap();
        a.mqtt_credentials_file = Some(wrong);
        let (exporters, _registry) = start(&a);
        wait_until("the refusal in health", Duration::from_secs(10), || {
            exporters.health().exporters[0]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("refused the credentials"))
        })
        .await;
        assert!(!exporters.health().serving());
        drop(exporters);

        let right = dir.0.join("right");
        std::fs::write(&right, "agent:s3cret\n").unwrap();
        a.mqtt_credentials_file = Some(right);
        let mut rx = subscriber(broker.port, false, Some(("agent", "s3cret"))).await;
        let (exporters, _registry) = start(&a);
        wait_until("MQTT connected", Duration::from_secs(10), || exporters.health().serving())
            .await;
        let b = batch(0, 1);
        let want = vec![expected(&b.targets[0])];
        exporters.push(b);
        assert_eq!(decoded(&receive(&mut rx, 1).await), want);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_mqtt_subscriber_does_not_slow_push_or_delivery_to_others() {
        let broker = Broker::mosquitto(None);
        // Subscribes, then never reads again: the broker queues for it and its socket fills. A
        // connection in the broker's first moments may be reset (1 run in CI): a new client
        // then subscribes, as `subscriber` does.
        let mut options = MqttOptions::new("slow", "127.0.0.1", broker.port);
        options.set_keep_alive(Duration::from_secs(60));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let (slow, slow_loop) = 'subscribed: loop {
            let (slow, mut slow_loop) = AsyncClient::new(options.clone(), 10);
            slow.subscribe("m/#", QoS::AtLeastOnce).await.unwrap();
            loop {
                match tokio::time::timeout_at(deadline, slow_loop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                        break 'subscribed (slow, slow_loop);
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        eprintln!("the slow subscriber's connection failed ({e}); again");
                        break;
                    }
                    Err(_) => panic!("the slow subscriber was not subscribed within 20 s"),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut rx = subscriber(broker.port, false, None).await;
        let (exporters, _registry) = start(&mqtt_args(broker.port));
        wait_until("MQTT connected", Duration::from_secs(10), || exporters.health().serving())
            .await;

        const BATCHES: u64 = 100;
        const TARGETS: usize = 50;
        push_without_waiting(&exporters, BATCHES, TARGETS).await;
        let total = BATCHES as usize * TARGETS;
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got < total {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(_)) => got += 1,
                _ => {
                    panic!("the healthy subscriber got {got} of {total}: {:?}", exporters.health())
                }
            }
        }
        assert_eq!(exporters.health().exporters[0].dropped, 0);
        drop((slow, slow_loop));
    }
}
