//! palisade-rate-limit (in progress).
