//! The local content store: content-addressed blobs, image records, unpacked layer cache, GC.
