//! The CNNs that embed each image (docs/fsc.md §5.1) and the projection after them.
//!
//! The convolutions are im2col + GEMM (the `gemm` crate) over chunks of images; the choice
//! of this path over a deep-learning library was made by measurement (docs/cnn-library.md).
//! Everything is generic over `f32` (training) and `f64` (verification against the
//! reference fixtures).

pub(crate) mod ops;
mod proj;
mod protonet;

pub use proj::Projection;
pub use protonet::{
    BatchNormBuffers, ProtoNet, ProtoNetConfig, ProtoNetTape, BLOCKS, BN_EPS, BN_MOMENTUM,
};
