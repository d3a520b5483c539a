//! One-shot image classification with plastic RNNs (the paper's `fsc` experiments): image
//! data sets (the MetaOptNet pickles and a procedural set), episode sampling and
//! augmentation, the CNNs, and the CNN → projection → plastic RNN model.

pub mod cnn;
pub mod model;
