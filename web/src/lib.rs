//! Ward web dashboard assets.
