pub mod config;
pub mod edge;
pub mod id;
pub mod node;
pub mod object;
pub mod replication;
pub mod storage;

pub mod pb {
    tonic::include_proto!("roost.v1");
}
