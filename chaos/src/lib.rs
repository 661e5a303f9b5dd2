//! palisade-chaos (in progress).
