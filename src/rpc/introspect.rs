//! The standard gRPC services every Roost gRPC server serves beside its
//! own: `grpc.health.v1.Health` (Kubernetes gRPC probes, load balancers;
//! SERVING for the whole server and for each of its services while the
//! process serves gRPC — whether a node is ready for traffic stays
//! `/readyz`'s answer) and server reflection (`grpc.reflection.v1`, so
//! `grpcurl` needs no .proto files).

use tonic::server::NamedService;

/// The encoded descriptors of `proto/roost/v1/` (build.rs).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("roost_descriptor");

/// A health service reporting SERVING for the server ("") and for each of
/// `services` (their full names, e.g. `roost.v1.Objects`).
pub async fn health(
    services: &[&str],
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    for name in services {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    service
}

/// The full name of a generated service (`roost.v1.Objects`).
pub fn name_of<S: NamedService>() -> &'static str {
    S::NAME
}

/// Server reflection over Roost's services and the health service; `None`
/// (logged) if the compiled-in descriptors do not decode, which a test
/// rules out.
pub fn reflection() -> Option<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    match tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
    {
        Ok(service) => Some(service),
        Err(e) => {
            tracing::error!(error = %e, "gRPC reflection is off: the descriptors do not decode");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_compiled_descriptors_decode() {
        assert!(super::reflection().is_some());
    }
}
