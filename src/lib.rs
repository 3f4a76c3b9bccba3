pub mod id;
pub mod storage;

pub mod pb {
    tonic::include_proto!("roost.v1");
}
