//! The CRDs, samples and validation rules against the real API server.

mod crds;
mod samples;
mod validation;
