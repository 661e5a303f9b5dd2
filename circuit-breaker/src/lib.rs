//! palisade-circuit-breaker (in progress).
