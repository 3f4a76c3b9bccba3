pub mod config;
pub mod id;
pub mod node;
pub mod storage;
pub mod telemetry;

pub mod pb {
    tonic::include_proto!("roost.v1");
}
