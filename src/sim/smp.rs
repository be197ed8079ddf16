//! Strategic merge patch, as the apiserver applies it to the kinds the sim serves.
