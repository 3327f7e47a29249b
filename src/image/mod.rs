//! Image assembly (config, manifest, index) and outputs (OCI layout, docker archive).
