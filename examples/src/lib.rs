//! Example pipelines (in progress).
