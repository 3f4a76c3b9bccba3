//! The protobuf codec of Roost's gRPC services: prost's, with small initial
//! buffers. tonic gives each call's encoder and decoder an 8 KiB buffer up
//! front, and a bridged WebSocket keeps one `Socket` call open for its whole
//! life — at 50,000 idle sockets, 16 KiB each at the edge and at the owner
//! is ~800 MiB apiece doing nothing. The buffers still grow to the largest
//! message a call carries.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial size of a call's encode and decode buffers, in bytes.
const BUFFER: usize = 1024;
/// Encoded bytes after which a streaming call yields (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER`]-sized initial buffers; the generated
/// clients and servers use it (`codec_path` in build.rs).
#[derive(Debug, Clone)]
pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        SmallBuffers(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }
}
