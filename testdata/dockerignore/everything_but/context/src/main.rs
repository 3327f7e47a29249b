src/main.rs
