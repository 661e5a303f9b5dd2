//! palisade facade (in progress).
