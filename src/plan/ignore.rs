//! `.dockerignore`: which context paths a build may see.
