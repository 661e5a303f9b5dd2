//! palisade-timeout (in progress).
