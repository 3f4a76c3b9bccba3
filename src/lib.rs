pub mod app;
pub mod id;
pub mod object;
pub mod replication;
pub mod storage;

pub mod pb {
    tonic::include_proto!("roost.v1");
}
