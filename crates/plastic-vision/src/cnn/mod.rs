//! The CNNs that embed each image (docs/fsc.md §5.1: ProtoNet conv4 and ResNet-12, behind
//! [`Backbone`]) and the projection after them.
//!
//! The convolutions are im2col + GEMM (the `gemm` crate) over chunks of images; the choice
//! of this path over a deep-learning library was made by measurement (docs/cnn-library.md).
//! Everything is generic over `f32` (training) and `f64` (verification against the
//! reference fixtures).

mod backbone;
pub(crate) mod ops;
mod proj;
mod protonet;
mod resnet;
mod workspace;

pub use backbone::{Backbone, BackboneConfig, BackboneTape, Noise};
pub use proj::Projection;
pub use protonet::{
    BatchNormBuffers, ProtoNet, ProtoNetConfig, ProtoNetTape, BLOCKS, BN_EPS, BN_MOMENTUM,
};
pub use resnet::{
    drop_mask, dropblock_mask, ResNet12, ResNet12Config, ResNet12Tape, DROPBLOCK_RAMP_CALLS,
    LEAKY_SLOPE, RESNET_BLOCKS, RESNET_WIDTHS,
};
pub use workspace::CnnWorkspace;
