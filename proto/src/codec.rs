//! The codec of every generated service: prost, with a small starting buffer per stream.
//!
//! tonic's default gives each stream an 8 KiB encode and an 8 KiB decode buffer up front. A hub holds
//! one stream per agent, nearly always idle (a heartbeat every 5 s is ~100 bytes), so at ten thousand
//! agents those buffers alone were ~160 MiB. The buffers still grow to whatever a message needs.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Starting size of a stream's buffers.
const BUFFER_BYTES: usize = 1024;
/// How much encoded output a stream gathers before handing it to HTTP/2 (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
