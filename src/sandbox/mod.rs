//! The rootless sandbox that runs one RUN step and leaves its diff in an overlay upper dir.
//! The only module allowed `unsafe` code; each block carries a `// SAFETY:` line.
