src/lib/x.rs
