//! The SensorThings URL language (placeholder: being written).
pub mod ir;
