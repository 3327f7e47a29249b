//! Layers: a directory diff becomes a deterministic tar, hashed and compressed in one stream;
//! and the safe unpacker that turns a layer back into a directory.
