//! sorat-pipeline
