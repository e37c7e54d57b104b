//! Health: the agent's `grpc.health.v1` services and the four levels `podtrace-agent health live`
//! reports (after the health-check reference: Optimal, Healthy, Degraded, Unhealthy).
//!
//! | service | SERVING when |
//! |---|---|
//! | `""` | the collection engine runs and a configuration was loaded |
//! | `podtrace.kubernetes` | the configuration source works: the NodeTrace watch and the last NodeTrace status write (cluster) or the last load of the file (standalone) |
//! | `podtrace.probes` | every eBPF probe the profiles ask for is attached (or none is asked for) |
//! | `podtrace.exporters` | every configured push exporter is connected (or none is configured) |
//! | `podtrace.collectors` | the collectors can read all their data (no [gap](crate::gaps): a capability or the host PID namespace missing) |
//!
//! | level | when | exit code |
//! |---|---|---|
//! | Optimal | every service SERVING | 0 |
//! | Healthy | `""` and `podtrace.kubernetes` SERVING, probes, exporters or collectors not: data is partial | 0 |
//! | Degraded | `""` SERVING, `podtrace.kubernetes` not: the configuration is stale or the agent cannot report to its NodeTrace | 1 |
//! | Unhealthy | no answer, or `""` not SERVING | 3 |
//!
//! (Exit code 2 is left to usage errors, which clap reports with 2.)

use serde::Serialize;
use std::{collections::BTreeMap, time::Duration};

/// The agent's subsystem services.
pub const SERVICES: [&str; 4] =
    ["podtrace.probes", "podtrace.kubernetes", "podtrace.exporters", "podtrace.collectors"];

pub use podtrace_api::health::Level;

/// A service's answer: `Some(true)` SERVING, `Some(false)` anything else, `None` no answer.
pub type Answers = BTreeMap<String, Option<bool>>;

/// The report of `health live`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The level.
    pub level: Level,
    /// Why it is not Optimal.
    pub reasons: Vec<String>,
    /// Every service's status.
    pub services: BTreeMap<String, String>,
}

fn why(service: &str) -> &'static str {
    match service {
        "podtrace.probes" => {
            "eBPF probes requested by a profile are not attached (see NodeTrace status.probes)"
        }
        "podtrace.kubernetes" => {
            "the configuration source failed (NodeTrace watch or config file; the agent runs on its last good configuration) or writing the NodeTrace status failed (see the agent's log: RBAC, API server)"
        }
        "podtrace.exporters" => "a push exporter is not connected to its broker",
        "podtrace.collectors" => {
            "data the agent cannot read is left out (a capability or hostPID missing): see podtrace_agent_data_unavailable and the NodeTrace's Degraded condition"
        }
        _ => "the agent is not running its collection engine",
    }
}

/// The level and reasons of a set of answers (pure).
pub fn level(answers: &Answers) -> Report {
    let status = |s: &str| answers.get(s).copied().flatten();
    let services = answers
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Some(true) => "SERVING",
                Some(false) => "NOT_SERVING",
                None => "NO_ANSWER",
            };
            (if k.is_empty() { "(overall)".into() } else { k.clone() }, s.to_owned())
        })
        .collect();
    let mut reasons: Vec<String> = answers
        .iter()
        .filter(|(_, v)| **v != Some(true))
        .map(|(k, _)| format!("{}: {}", if k.is_empty() { "(overall)" } else { k }, why(k)))
        .collect();
    let level = if status("") != Some(true) {
        if answers.values().all(Option::is_none) {
            reasons = vec!["no answer from the health endpoint (is the agent running?)".into()];
        }
        Level::Unhealthy
    } else if status("podtrace.kubernetes") != Some(true) {
        Level::Degraded
    } else if SERVICES.iter().all(|s| status(s) == Some(true)) {
        Level::Optimal
    } else {
        Level::Healthy
    };
    Report { level, reasons, services }
}

/// Asks every service of the agent at `endpoint` (`HOST:PORT`).
pub async fn check(endpoint: &str, timeout: Duration) -> Answers {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut answers: Answers =
        std::iter::once("").chain(SERVICES).map(|s| (s.to_owned(), None)).collect();
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}")) else {
        return answers;
    };
    let Ok(Ok(channel)) =
        tokio::time::timeout(timeout, endpoint.connect_timeout(timeout).connect()).await
    else {
        return answers;
    };
    let mut client = HealthClient::new(channel);
    for (service, answer) in answers.iter_mut() {
        let req = HealthCheckRequest { service: service.clone() };
        if let Ok(Ok(r)) = tokio::time::timeout(timeout, client.check(req)).await {
            *answer = Some(r.into_inner().status == tonic_health::ServingStatus::Serving as i32);
        }
    }
    answers
}

/// `podtrace-agent health live`: asks the agent at `endpoint`, prints the report as text or
/// JSON and returns the exit code of its level.
pub async fn live(endpoint: &str, json: bool, timeout: Duration) -> i32 {
    let report = level(&check(endpoint, timeout).await);
    if json {
        println!("{}", serde_json::to_string(&report).expect("a report serializes"));
    } else {
        print!("{}", render(&report));
    }
    report.level.exit_code()
}

/// The text form of a report.
pub fn render(report: &Report) -> String {
    let mut s = format!("{:?}\n", report.level);
    for r in &report.reasons {
        s.push_str(&format!("  - {r}\n"));
    }
    for (k, v) in &report.services {
        s.push_str(&format!("  {k}: {v}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(
        overall: Option<bool>,
        probes: Option<bool>,
        kube: Option<bool>,
        exporters: Option<bool>,
        collectors: Option<bool>,
    ) -> Answers {
        [
            ("", overall),
            ("podtrace.probes", probes),
            ("podtrace.kubernetes", kube),
            ("podtrace.exporters", exporters),
            ("podtrace.collectors", collectors),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[test]
    fn levels_follow_the_table() {
        let t = Some(true);
        let f = Some(false);
        assert_eq!(level(&answers(t, t, t, t, t)).level, Level::Optimal);
        assert!(level(&answers(t, t, t, t, t)).reasons.is_empty());
        let healthy = level(&answers(t, f, t, t, t));
        assert_eq!(healthy.level, Level::Healthy);
        assert!(healthy.reasons[0].starts_with("podtrace.probes: eBPF probes"));
        assert_eq!(level(&answers(t, t, t, None, t)).level, Level::Healthy);
        // Data the agent cannot read: partial data, so Healthy, with the reason.
        let gaps = level(&answers(t, t, t, t, f));
        assert_eq!(gaps.level, Level::Healthy);
        assert!(gaps.reasons[0].contains("podtrace_agent_data_unavailable"), "{:?}", gaps.reasons);
        assert_eq!(level(&answers(t, t, f, t, t)).level, Level::Degraded);
        assert_eq!(level(&answers(f, t, t, t, t)).level, Level::Unhealthy);
        let gone = level(&answers(None, None, None, None, None));
        assert_eq!(gone.level, Level::Unhealthy);
        assert_eq!(gone.reasons, ["no answer from the health endpoint (is the agent running?)"]);
        assert_eq!(
            [Level::Optimal, Level::Healthy, Level::Degraded, Level::Unhealthy]
                .map(Level::exit_code),
            [0, 0, 1, 3]
        );
    }

    #[tokio::test]
    async fn check_reads_a_real_grpc_health_server() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (health, _task) =
            podtrace_runtime::health::serve(addr, &SERVICES, std::future::pending()).await.unwrap();
        for s in ["", "podtrace.kubernetes", "podtrace.exporters", "podtrace.collectors"] {
            health.set(s, true).await;
        }
        let report = level(&check(&addr.to_string(), Duration::from_secs(2)).await);
        assert_eq!(report.level, Level::Healthy);
        assert_eq!(report.services["podtrace.probes"], "NOT_SERVING");
        let none = level(&check("127.0.0.1:1", Duration::from_millis(300)).await);
        assert_eq!(none.level, Level::Unhealthy);
        assert!(render(&none).starts_with("Unhealthy\n"));
    }
}
