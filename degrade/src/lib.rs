//! palisade-degrade (in progress).
