//! A procedural image data set (in progress).
