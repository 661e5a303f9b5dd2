//! palisade-retry (in progress).
