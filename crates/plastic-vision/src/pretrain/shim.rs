//! TEMPORARY: the CNN calls pretraining needs, in the shape of the coming `cnn::Backbone`
//! (removed when that lands).

use plastic::params::ParamInfo;
use plastic::rng::Rng;
use plastic::{Float, Result};

use crate::cnn::{BatchNormBuffers, ProtoNet, ProtoNetConfig, ProtoNetTape, BLOCKS};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BackboneConfig {
    ProtoNet(ProtoNetConfig),
}

impl BackboneConfig {
    pub fn check(&self) -> Result<()> {
        match self {
            BackboneConfig::ProtoNet(c) => c.check(),
        }
    }
    pub fn name(&self) -> &'static str {
        "protonet"
    }
    pub fn image_len(&self) -> usize {
        match self {
            BackboneConfig::ProtoNet(c) => c.image_len(),
        }
    }
    pub fn feature_size(&self) -> usize {
        match self {
            BackboneConfig::ProtoNet(c) => c.feature_size(),
        }
    }
    pub fn param_infos(&self, offset: usize) -> Vec<ParamInfo> {
        match self {
            BackboneConfig::ProtoNet(c) => c.param_infos(offset),
        }
    }
    pub fn param_len(&self) -> usize {
        match self {
            BackboneConfig::ProtoNet(c) => c.param_len(),
        }
    }
    pub fn init_params<F: Float>(&self, rng: &mut Rng) -> Vec<F> {
        match self {
            BackboneConfig::ProtoNet(c) => c.init_params(rng),
        }
    }
    pub fn batch_norms(&self) -> Vec<(String, usize)> {
        match self {
            BackboneConfig::ProtoNet(c) => (0..BLOCKS)
                .map(|k| (format!("cnn.{k}.bn"), c.channels))
                .collect(),
        }
    }
    pub fn new_buffers<F: Float>(&self) -> Vec<BatchNormBuffers<F>> {
        self.batch_norms()
            .into_iter()
            .map(|(_, c)| BatchNormBuffers::new(c))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Noise {
    pub seed: u64,
    pub call: u64,
}

pub enum BackboneTape<F> {
    ProtoNet(ProtoNetTape<F>),
}

#[derive(Debug, Clone, Copy)]
pub enum Backbone {
    ProtoNet(ProtoNet),
}

impl Backbone {
    pub fn new(config: BackboneConfig) -> Result<Self> {
        match config {
            BackboneConfig::ProtoNet(c) => Ok(Backbone::ProtoNet(ProtoNet::new(c)?)),
        }
    }
    pub fn forward_train<F: Float>(
        &self,
        params: &[F],
        images: &[F],
        batch: usize,
        buffers: Option<&mut [BatchNormBuffers<F>]>,
        _noise: Option<Noise>,
    ) -> Result<(Vec<F>, BackboneTape<F>)> {
        match self {
            Backbone::ProtoNet(n) => {
                let (f, t) = n.forward_train(params, images, batch, buffers)?;
                Ok((f, BackboneTape::ProtoNet(t)))
            }
        }
    }
    pub fn forward_eval<F: Float>(
        &self,
        params: &[F],
        images: &[F],
        batch: usize,
        buffers: &[BatchNormBuffers<F>],
    ) -> Result<Vec<F>> {
        match self {
            Backbone::ProtoNet(n) => n.forward_eval(params, images, batch, buffers),
        }
    }
    pub fn backward<F: Float>(
        &self,
        params: &[F],
        tape: &BackboneTape<F>,
        d_features: &[F],
        grads: &mut [F],
        _d_images: Option<&mut [F]>,
    ) -> Result<()> {
        match (self, tape) {
            (Backbone::ProtoNet(n), BackboneTape::ProtoNet(t)) => {
                n.backward(params, t, d_features, grads)
            }
        }
    }
}

/// The CNN an image task's configuration names, at the data set's image size.
pub fn backbone_of(cnn_width: usize, image_size: usize) -> BackboneConfig {
    BackboneConfig::ProtoNet(ProtoNetConfig {
        in_channels: 3,
        channels: cnn_width,
        image_size,
    })
}

/// The CNN in words, for error messages: name, width, image size and features.
pub fn describe(config: &BackboneConfig) -> String {
    match config {
        BackboneConfig::ProtoNet(c) => format!(
            "protonet of width {} on {}×{} images ({} features)",
            c.channels,
            c.image_size,
            c.image_size,
            c.feature_size()
        ),
    }
}
