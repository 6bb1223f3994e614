//! Trust: parsing client certificates and the persistent store of trusted ones.

pub mod certificate;
pub(crate) mod store;
