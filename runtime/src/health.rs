//! `grpc.health.v1` health checking (tonic-health), the protocol of Kubernetes' `grpc` probes.
//!
//! Each binary reports the overall service `""` and one service per subsystem
//! (`podtrace.probes`, `podtrace.kubernetes`, `podtrace.exporters` for the agent).

use std::{future::Future, net::SocketAddr};
use tonic_health::{ServingStatus, server::HealthReporter};

/// The default gRPC health port (the reference's 50100).
pub const DEFAULT_PORT: u16 = 50100;

/// A service that is SERVING for as long as the process answers, for liveness probes: the
/// overall service "" turns NOT_SERVING when the process is not ready, which must not make the
/// kubelet restart it.
pub const LIVENESS_SERVICE: &str = "liveness";

/// Sets the serving status of health services.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
}

impl Health {
    /// Reports `service` ("" for the whole process) as serving or not.
    pub async fn set(&self, service: &str, serving: bool) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.reporter.set_service_status(service, status).await;
    }
}

/// Starts the gRPC health server on `addr` with every service in `services` (and "") not
/// serving and [`LIVENESS_SERVICE`] serving, until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    services: &[&str],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Health, tokio::task::JoinHandle<Result<(), tonic::transport::Error>>), std::io::Error>
{
    let (reporter, service) = tonic_health::server::health_reporter();
    let health = Health { reporter };
    health.set("", false).await;
    health.set(LIVENESS_SERVICE, true).await;
    for s in services {
        health.set(s, false).await;
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown),
    );
    Ok((health, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    #[tokio::test]
    async fn services_start_not_serving_and_follow_set() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (health, _task) =
            serve(addr, &["podtrace.probes"], std::future::pending()).await.unwrap();
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap();
        let mut client = HealthClient::new(channel.connect().await.unwrap());
        let check = |service: &str| HealthCheckRequest { service: service.into() };
        let status =
            |r: tonic::Response<tonic_health::pb::HealthCheckResponse>| r.into_inner().status;
        assert_eq!(
            status(client.check(check("")).await.unwrap()),
            ServingStatus::NotServing as i32
        );
        health.set("podtrace.probes", true).await;
        assert_eq!(
            status(client.check(check("podtrace.probes")).await.unwrap()),
            ServingStatus::Serving as i32
        );
        let unknown = client.check(check("nope")).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }
}
